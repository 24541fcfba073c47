"""MXFP4 (OCP microscaling, FP4 e2m1 elements, E8M0 block scales): decode, encode, QMoE repack.

Checkpoint layout (gpt-oss `*.blocks` / `*.scales`):

    blocks  uint8 [..., G, 16]   32 FP4 codes per block, two per byte, LOW nibble first:
                                 element 2j of a block is `byte[j] & 0xF`, element 2j+1 is `byte[j] >> 4`
    scales  uint8 [..., G]       E8M0: the block's value is FP4_VALUES[code] * 2**(scale - 127)
                                 (255 is NaN in the OCP spec and is rejected)
    decoded float [..., G * 32]  element k of a row lives in block k // 32, position k % 32

Expert tensors are `[E, N, K/32, 16]` + `[E, N, K/32]` for the weight W[e] of y = W[e] x
(N outputs, K inputs), so decoding gives `W[e, n, k]` directly.
"""

from __future__ import annotations

import numpy as np

from gptoss.quant.blockwise import BlockQuantized
from gptoss.quant.errors import LayoutError, NaNScaleError, NonFiniteWeightError

BLOCK = 32
"""Elements per MXFP4 block (fixed by the OCP MX spec)."""

BYTES_PER_BLOCK = BLOCK // 2

SCALE_BIAS = 127
NAN_SCALE = 255

FP4_VALUES = np.array(
    [+0.0, +0.5, +1.0, +1.5, +2.0, +3.0, +4.0, +6.0,
     -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    dtype=np.float32,
)
"""Value of each 4-bit e2m1 code; bit 3 is the sign."""

_FP4_MAX = 6.0
# Magnitudes of codes 0..7 and the midpoints between neighbours, for round-to-nearest-even.
_MAGNITUDES = FP4_VALUES[:8]
_MIDPOINTS = (_MAGNITUDES[:-1] + _MAGNITUDES[1:]) / 2

_ROWS_PER_CHUNK = 1 << 16  # blocks decoded per step: bounds the temporaries, not the output


def check_mxfp4(blocks: np.ndarray, scales: np.ndarray, name: str) -> None:
    """Raise a `LayoutError` or `NaNScaleError` (naming `name`) unless blocks/scales are valid MXFP4."""
    if blocks.dtype != np.uint8 or scales.dtype != np.uint8:
        raise LayoutError(name, f"blocks and scales must be uint8, got {blocks.dtype} and {scales.dtype}")
    if blocks.ndim < 2 or blocks.shape[-1] != BYTES_PER_BLOCK:
        raise LayoutError(name, f"blocks must be [..., G, {BYTES_PER_BLOCK}], got {list(blocks.shape)}")
    if blocks.shape[:-1] != scales.shape:
        raise LayoutError(
            name, f"scales {list(scales.shape)} must equal blocks {list(blocks.shape)} without the last axis"
        )
    bad = np.flatnonzero(scales.reshape(-1) == NAN_SCALE)
    if bad.size:
        where = np.unravel_index(bad[0], scales.shape)
        raise NaNScaleError(
            name, f"{bad.size} scale byte(s) are 255 (NaN in the OCP MX spec), first at index {tuple(map(int, where))}"
        )


def decode_mxfp4(blocks: np.ndarray, scales: np.ndarray, name: str = "mxfp4") -> np.ndarray:
    """Decode MXFP4 to float32, bit-exact with gpt-oss' reference (`Checkpoint._get_mxfp4_tensor`).

    blocks uint8 [..., G, 16] + scales uint8 [..., G]  ->  float32 [..., G * 32]

    Each value is the exact product FP4_VALUES[code] * 2**(scale - 127) in float32: subnormal
    results for small scales, +-inf where the product exceeds float32 (scale 254 with |code| >= 2),
    -0.0 for code 8. Casting the result to bfloat16 equals the reference decoded in bfloat16.
    """
    check_mxfp4(blocks, scales, name)
    *prefix, groups, _ = blocks.shape
    rows = int(np.prod(prefix, dtype=np.int64)) * groups
    flat_blocks = blocks.reshape(rows, BYTES_PER_BLOCK)
    flat_exps = scales.reshape(rows, 1).astype(np.int32) - SCALE_BIAS
    out = np.empty((rows, BLOCK), dtype=np.float32)
    with np.errstate(over="ignore"):  # scale 254 overflows to inf, as in the reference
        for r0 in range(0, rows, _ROWS_PER_CHUNK):
            r1 = min(r0 + _ROWS_PER_CHUNK, rows)
            chunk = flat_blocks[r0:r1]
            out[r0:r1, 0::2] = FP4_VALUES[chunk & 0x0F]
            out[r0:r1, 1::2] = FP4_VALUES[chunk >> 4]
            np.ldexp(out[r0:r1], flat_exps[r0:r1], out=out[r0:r1])
    return out.reshape(*prefix, groups * BLOCK)


def _round_to_fp4_codes(x: np.ndarray) -> np.ndarray:
    """Codes (uint8 0..15) of x, already divided by its block scale and within [-6, 6], rounded to nearest even."""
    mag = np.abs(x)
    below = np.searchsorted(_MIDPOINTS, mag, side="left")  # ties go to the lower code
    above = np.searchsorted(_MIDPOINTS, mag, side="right")  # ties go to the upper code
    # On a tie pick the code whose mantissa bit is 0 (the even code), as IEEE round-half-even does.
    codes = np.where((below != above) & (below % 2 == 1), above, below).astype(np.uint8)
    return codes | (np.signbit(x).astype(np.uint8) << 3)


def encode_mxfp4(w: np.ndarray, name: str = "weight") -> tuple[np.ndarray, np.ndarray]:
    """Quantize to MXFP4 along the last axis.

    w float [..., K] (K % 32 == 0)  ->  blocks uint8 [..., K/32, 16], scales uint8 [..., K/32]

    Each block gets the smallest power-of-two scale 2**e with max|w| / 2**e <= 6 (so nothing in
    the block is clipped), e clamped to [-127, 127]; elements are rounded to the nearest FP4 value,
    ties to even. An all-zero block gets scale byte 127 (2**0). Values the grid cannot reach
    because e hit -127 round toward zero. decode(encode(decode(b, s))) == decode(b, s) for every
    finite decode.
    """
    w = np.asarray(w)
    if w.ndim < 1 or w.shape[-1] % BLOCK:
        raise LayoutError(name, f"last axis must be a multiple of {BLOCK}, got shape {list(w.shape)}")
    if not np.issubdtype(w.dtype, np.floating):
        raise LayoutError(name, f"expected a floating-point array, got {w.dtype}")
    w = w.astype(np.float32, copy=False)
    if not np.isfinite(w).all():
        raise NonFiniteWeightError(name, "holds NaN or infinity; MXFP4 cannot represent it")
    *prefix, k = w.shape
    grouped = w.reshape(*prefix, k // BLOCK, BLOCK)
    amax = np.abs(grouped).max(axis=-1)
    # frexp: amax/6 = m * 2**e with m in [0.5, 1) -> smallest e' with amax/6 <= 2**e' is e (or e-1 if m == 0.5).
    # float64 keeps the division from rounding a value just above a power of two down onto it.
    mant, exp = np.frexp(amax.astype(np.float64) / _FP4_MAX)
    exp = np.where(mant == 0.5, exp - 1, exp)
    exp = np.where(amax == 0, 0, exp)
    exp = np.clip(exp, -SCALE_BIAS, SCALE_BIAS).astype(np.int32)
    scaled = np.ldexp(grouped, -exp[..., None])
    codes = _round_to_fp4_codes(scaled)
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    scales = (exp + SCALE_BIAS).astype(np.uint8)
    return blocks, scales


def pack_qmoe_fp4(
    blocks: np.ndarray, scales: np.ndarray, name: str = "experts"
) -> tuple[np.ndarray, np.ndarray]:
    """Repack checkpoint MXFP4 experts for `com.microsoft.QMoE` (quant_type="fp4", weights_prepacked=1).

    blocks uint8 [E, N, K/32, 16] + scales uint8 [E, N, K/32]
      -> weights uint8 [E, N, K/2]   K-packed row-major: byte j of row n holds k = 2j (low nibble)
                                     and k = 2j+1 (high nibble), exactly the checkpoint's nibble order
         scales  uint8 [E, N, K/32]  the E8M0 bytes unchanged, to be stored as FLOAT8E8M0

    No nibble is moved: gpt-oss' checkpoint already is QMoE's fp4 K-packed layout, so the repack
    is a validated reshape (a view when `blocks` is contiguous). Fused gate/up (mlp1) rows stay
    interleaved (even row = gate, odd row = linear), which is QMoE's swiglu_fusion=1.
    """
    check_mxfp4(blocks, scales, name)
    if blocks.ndim != 4:
        raise LayoutError(name, f"expert blocks must be [E, N, K/32, 16], got {list(blocks.shape)}")
    e, n, groups, _ = blocks.shape
    return blocks.reshape(e, n, groups * BYTES_PER_BLOCK), scales


def pack_qmoe_fp4_n_packed(blocks: np.ndarray, name: str = "experts") -> np.ndarray:
    """Repack checkpoint MXFP4 expert codes for `com.microsoft.QMoE` quant_type="fp4" on CUDA (no prepacking).

    blocks uint8 [E, N, K/32, 16]  (row n holds W[e, n, :], low nibble first)
      -> weights uint8 [E, K, N/2]  N-packed, K-major: byte (e, k, j) holds W[e, 2j, k] in its low nibble and
                                     W[e, 2j + 1, k] in its high nibble
    The E8M0 scales stay as they are, [E, N, K/32]. N must be even. Codes move, values do not: decoding the result
    with its scales gives the checkpoint's weights exactly.
    """
    if blocks.dtype != np.uint8 or blocks.ndim != 4 or blocks.shape[-1] != BYTES_PER_BLOCK:
        raise LayoutError(name, f"expert blocks must be uint8 [E, N, K/32, 16], got {blocks.dtype}{list(blocks.shape)}")
    e, n, groups, _ = blocks.shape
    if n % 2:
        raise LayoutError(name, f"the output dimension N={n} must be even to pack two rows per byte")
    codes = np.empty((e, n, groups * BLOCK), np.uint8)          # [E, N, K]: one 4-bit code per element
    codes[..., 0::2] = blocks.reshape(e, n, -1) & 0x0F
    codes[..., 1::2] = blocks.reshape(e, n, -1) >> 4
    by_k = codes.transpose(0, 2, 1)                              # [E, K, N]
    return np.ascontiguousarray(by_k[..., 0::2] | (by_k[..., 1::2] << 4))


# FP4 code -> twice its value, as an int8 code around the default zero point 128: exact, |2 * 6| <= 127.
_INT8_CODE_OF_FP4 = (2 * FP4_VALUES + 128).astype(np.uint8)


def requantize_mxfp4_to_int8(blocks: np.ndarray, scales: np.ndarray, name: str = "mxfp4") -> BlockQuantized:
    """Lossless MXFP4 -> symmetric block-wise int8 (block 32), for int8 kernels (MatMulNBits bits=8).

    blocks uint8 [..., G, 16] + scales uint8 [..., G]
      -> BlockQuantized(codes uint8 [..., G, 32], scales float32 [..., G], zero_points None, bits 8, block 32)

    Every FP4 value is a multiple of 0.5, so value * 2**(s-127) == (2 * value) * 2**(s-128) with
    2 * value in [-12, 12]: code = 2 * value + 128, scale = 2**(s-128). dequantize_blockwise of the
    result equals decode_mxfp4 exactly (for scales whose products stay finite). -0 becomes +0.
    """
    check_mxfp4(blocks, scales, name)
    *prefix, groups, _ = blocks.shape
    codes = np.empty((*prefix, groups, BLOCK), dtype=np.uint8)
    codes[..., 0::2] = _INT8_CODE_OF_FP4[blocks & 0x0F]
    codes[..., 1::2] = _INT8_CODE_OF_FP4[blocks >> 4]
    int8_scales = np.ldexp(np.float32(1), scales.astype(np.int32) - (SCALE_BIAS + 1)).astype(np.float32)
    return BlockQuantized(codes, int8_scales, None, 8, BLOCK, groups * BLOCK)
