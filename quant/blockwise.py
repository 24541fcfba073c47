"""Block-wise int4/int8 quantization in ONNX Runtime's contrib-op layouts, and fp16 casting.

One quantizer, three packings of its result:

    quantize_blockwise   w float [..., C]  ->  BlockQuantized (unsigned codes [..., nb, bs], scales, zero points)
      |-> pack_matmul_nbits            com.microsoft.MatMulNBits    (weight [N, K], y = W x)
      |-> pack_gather_block_quantized  com.microsoft.GatherBlockQuantized (table [V, H], gather_axis 0)
      '-> pack_qmoe_int                com.microsoft.QMoE quant_type="int" (experts [E, N, K])

Blocks run along the last axis (K, the input features). nb = ceil(C / bs); a last, partial block
is padded with zeros. Codes are unsigned: w ~= (code - zero_point) * scale. Symmetric schemes
store no zero points and rely on ORT's default zero point 2**(bits-1) (8 for int4, 128 for int8).
Sub-byte codes are packed LSB first: for int4, element 2j is the low nibble of byte j.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gptoss.quant.errors import BlockSizeError, LayoutError, NonFiniteWeightError

SUPPORTED_BITS = (4, 8)
MIN_BLOCK, MAX_BLOCK = 16, 256
DEFAULT_BLOCK = 32
FP16_MAX = float(np.finfo(np.float16).max)


@dataclass(frozen=True)
class BlockQuantized:
    """Unpacked result of `quantize_blockwise` for a tensor [..., C].

    codes        uint8 [..., nb, block_size]   unsigned codes, padding positions hold the zero point
    scales       float32 [..., nb]
    zero_points  uint8 [..., nb], or None for symmetric (meaning 2**(bits-1) everywhere)
    """

    codes: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    bits: int
    block_size: int
    cols: int

    @property
    def default_zero_point(self) -> int:
        return 1 << (self.bits - 1)


def check_block_size(block_size: int, name: str) -> None:
    """Raise `BlockSizeError` unless block_size is a power of two in [16, 256]."""
    if (
        not isinstance(block_size, (int, np.integer))
        or not MIN_BLOCK <= block_size <= MAX_BLOCK
        or block_size & (block_size - 1)
    ):
        raise BlockSizeError(
            name, f"block size must be a power of two in [{MIN_BLOCK}, {MAX_BLOCK}], got {block_size!r}"
        )


def _check_bits(bits: int, name: str) -> None:
    if bits not in SUPPORTED_BITS:
        raise LayoutError(name, f"bits must be one of {SUPPORTED_BITS}, got {bits!r}")


def _float_input(w: np.ndarray, name: str, min_ndim: int = 1) -> np.ndarray:
    w = np.asarray(w)
    if not np.issubdtype(w.dtype, np.floating):
        raise LayoutError(name, f"expected a floating-point array, got {w.dtype}")
    if w.ndim < min_ndim or (w.ndim and w.shape[-1] == 0):
        raise LayoutError(name, f"expected at least {min_ndim} axes and a non-empty last axis, got {list(w.shape)}")
    w = w.astype(np.float32, copy=False)
    if not np.isfinite(w).all():
        raise NonFiniteWeightError(name, "holds NaN or infinity")
    return w


def quantize_blockwise(
    w: np.ndarray,
    bits: int = 4,
    block_size: int = DEFAULT_BLOCK,
    symmetric: bool = True,
    name: str = "weight",
) -> BlockQuantized:
    """Quantize w float [..., C] in blocks of `block_size` along the last axis.

    symmetric:  scale = max|w| / (2**(bits-1) - 1), code = round(w / scale) + 2**(bits-1),
                so codes span [1, 2**bits - 1] and zero is exact.
    asymmetric: the range [min(w, 0), max(w, 0)] maps onto [0, 2**bits - 1];
                zero_point = round(-lo / scale), code = clip(round(w / scale) + zero_point).
    Rounding is half to even. An all-zero block gets scale 1 (any scale decodes it exactly).
    """
    _check_bits(bits, name)
    check_block_size(block_size, name)
    w = _float_input(w, name)
    *prefix, cols = w.shape
    nb = -(-cols // block_size)
    padded = np.zeros((*prefix, nb * block_size), dtype=np.float32)
    padded[..., :cols] = w
    blocks = padded.reshape(*prefix, nb, block_size)
    qmax = (1 << bits) - 1
    if symmetric:
        zp = 1 << (bits - 1)
        amax = np.abs(blocks).max(axis=-1)
        scales = np.where(amax > 0, amax / np.float32(zp - 1), np.float32(1)).astype(np.float32)
        codes = np.clip(np.rint(blocks / scales[..., None]) + zp, 0, qmax).astype(np.uint8)
        return BlockQuantized(codes, scales, None, bits, block_size, cols)
    lo = np.minimum(blocks.min(axis=-1), 0)
    hi = np.maximum(blocks.max(axis=-1), 0)
    scales = np.where(hi > lo, (hi - lo) / np.float32(qmax), np.float32(1)).astype(np.float32)
    zero_points = np.clip(np.rint(-lo / scales), 0, qmax).astype(np.uint8)
    codes = np.clip(np.rint(blocks / scales[..., None]) + zero_points[..., None], 0, qmax).astype(np.uint8)
    return BlockQuantized(codes, scales, zero_points, bits, block_size, cols)


def dequantize_blockwise(q: BlockQuantized) -> np.ndarray:
    """BlockQuantized -> float32 [..., C]: (code - zero_point) * scale, padding dropped."""
    zp = q.zero_points if q.zero_points is not None else np.full(q.scales.shape, q.default_zero_point, np.uint8)
    values = (q.codes.astype(np.float32) - zp[..., None].astype(np.float32)) * q.scales[..., None]
    return values.reshape(*values.shape[:-2], -1)[..., : q.cols]


def pack_bits(codes: np.ndarray, bits: int, name: str = "codes") -> np.ndarray:
    """uint8 codes [..., M] -> uint8 [..., ceil(M * bits / 8)], LSB first (int4: element 2j in the low nibble)."""
    _check_bits(bits, name)
    codes = np.asarray(codes, dtype=np.uint8)
    if bits == 8:
        return codes.copy()
    if codes.shape[-1] % 2:
        codes = np.concatenate([codes, np.zeros((*codes.shape[:-1], 1), np.uint8)], axis=-1)
    return (codes[..., 0::2] & 0x0F) | (codes[..., 1::2] << 4)


def unpack_bits(packed: np.ndarray, bits: int, count: int, name: str = "packed") -> np.ndarray:
    """Inverse of `pack_bits`: uint8 [..., ceil(count * bits / 8)] -> uint8 codes [..., count]."""
    _check_bits(bits, name)
    packed = np.asarray(packed)
    if packed.dtype != np.uint8 or packed.shape[-1] * 8 // bits < count:
        raise LayoutError(name, f"need uint8 [..., >= {count * bits // 8}], got {packed.dtype} {list(packed.shape)}")
    if bits == 8:
        return packed[..., :count]
    both = np.stack([packed & 0x0F, packed >> 4], axis=-1)
    return both.reshape(*packed.shape[:-1], -1)[..., :count]


def _packed_zero_points(q: BlockQuantized) -> np.ndarray | None:
    return None if q.zero_points is None else pack_bits(q.zero_points, q.bits)


@dataclass(frozen=True)
class PackedBlockwise:
    """Arrays one contrib op takes, with the attributes needed to read them back."""

    data: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray | None
    bits: int
    block_size: int
    cols: int


def pack_matmul_nbits(q: BlockQuantized, name: str = "weight") -> PackedBlockwise:
    """Layout of `com.microsoft.MatMulNBits` for a weight W [N, K] (y = W x; attributes N, K, bits, block_size).

    data         B uint8 [N, nb, block_size * bits / 8]   codes of block b of row n, packed LSB first
    scales       float32 [N, nb]
    zero_points  uint8 [N, ceil(nb * bits / 8)] packed like B (int4: block 2j in the low nibble), or None
    with nb = ceil(K / block_size).
    """
    if q.codes.ndim != 3:
        raise LayoutError(name, f"MatMulNBits packs a 2-D weight [N, K], got codes {list(q.codes.shape)}")
    return PackedBlockwise(
        pack_bits(q.codes, q.bits), q.scales, _packed_zero_points(q), q.bits, q.block_size, q.cols
    )


def pack_gather_block_quantized(q: BlockQuantized, name: str = "embedding") -> PackedBlockwise:
    """Layout of `com.microsoft.GatherBlockQuantized` for a table [V, H] with uint8 data,
    gather_axis=0, quantize_axis=1 (last), attributes bits and block_size.

    data         uint8 [V, H * bits / 8]            codes of row v, packed LSB first along H
    scales       float32 [V, H / block_size]
    zero_points  uint8 [V, ceil((H / block_size) * bits / 8)] packed like data, or None
    H must be a multiple of block_size.
    """
    if q.codes.ndim != 3:
        raise LayoutError(name, f"GatherBlockQuantized packs a 2-D table [V, H], got codes {list(q.codes.shape)}")
    if q.cols % q.block_size:
        raise BlockSizeError(name, f"H={q.cols} must be a multiple of block_size={q.block_size}")
    rows = q.codes.shape[0]
    data = pack_bits(q.codes.reshape(rows, -1), q.bits)
    return PackedBlockwise(data, q.scales, _packed_zero_points(q), q.bits, q.block_size, q.cols)


def pack_qmoe_int(q: BlockQuantized, name: str = "experts") -> PackedBlockwise:
    """Layout of `com.microsoft.QMoE` quant_type="int", weights_prepacked=0, for experts [E, N, K].

    data         uint8 [E, N, K * bits / 8]        per row: the MatMulNBits blocks back to back
    scales       float32 [E, N, K / block_size]
    zero_points  uint8 [E, N, ceil((K / block_size) * bits / 8)], or None
    K must be a multiple of block_size.
    """
    if q.codes.ndim != 4:
        raise LayoutError(name, f"QMoE packs experts [E, N, K], got codes {list(q.codes.shape)}")
    if q.cols % q.block_size:
        raise BlockSizeError(name, f"K={q.cols} must be a multiple of block_size={q.block_size}")
    e, n = q.codes.shape[:2]
    data = pack_bits(q.codes.reshape(e, n, -1), q.bits)
    return PackedBlockwise(data, q.scales, _packed_zero_points(q), q.bits, q.block_size, q.cols)


def dequantize_packed(p: PackedBlockwise, name: str = "weight") -> np.ndarray:
    """Read any of the three packings back to float32 [..., cols], straight from the packed bytes.

    This is the independent path the round-trip tests use: it reads `data` as rows of packed
    codes, whatever the op-specific grouping of the axes in front.
    """
    scales = np.asarray(p.scales, dtype=np.float32)
    nb = scales.shape[-1]
    lead = scales.shape[:-1]
    codes = unpack_bits(p.data.reshape(*lead, -1), p.bits, nb * p.block_size, name)
    codes = codes.reshape(*lead, nb, p.block_size).astype(np.float32)
    if p.zero_points is None:
        zp = np.float32(1 << (p.bits - 1))
    else:
        zp = unpack_bits(p.zero_points, p.bits, nb, name).astype(np.float32)[..., None]
    values = (codes - zp) * scales[..., None]
    return values.reshape(*lead, -1)[..., : p.cols]


def to_fp16(w: np.ndarray, name: str = "weight") -> np.ndarray:
    """float [...] -> float16 [...], round to nearest even. Values beyond +-65504 raise instead of becoming inf."""
    w = _float_input(w, name, min_ndim=0)
    big = np.abs(w) > FP16_MAX
    if big.any():
        worst = float(np.abs(w).max())
        raise LayoutError(name, f"{int(big.sum())} value(s) exceed the float16 range (max |w| = {worst:g})")
    return w.astype(np.float16)
