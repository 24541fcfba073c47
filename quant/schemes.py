"""Quant schemes as data: one frozen row per scheme, and the packed size of a tensor under each.

Sizes follow the packers (`quant.mxfp4`, `quant.blockwise`) byte for byte, for a weight whose
LAST axis is the blocked one (K, the input features; H for the embedding table):

    mxfp4   K/2 bytes of codes + K/32 E8M0 scale bytes per row                    (K % 32 == 0)
    int4    nb * block/2 bytes of codes + nb float32 scales per row [+ ceil(nb/2) zero-point bytes]
    int8    nb * block bytes of codes  + nb float32 scales per row [+ nb zero-point bytes]
    fp16    2 bytes per element;  fp32  4 bytes per element
with nb = ceil(K / block), the last block zero-padded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from gptoss.quant.blockwise import check_block_size
from gptoss.quant.errors import BlockSizeError, LayoutError, SchemePartError, UnknownSchemeError

PARTS = ("experts", "attention", "router", "embedding", "unembedding")
"""Model parts a scheme can apply to (the project-wide vocabulary)."""

_ALL = frozenset(PARTS)
# The router is [E, hidden] (184 KiB in bf16 for 20b): block quantization saves nothing worth
# a flipped top-k choice, so the integer schemes leave it alone.
_NOT_ROUTER = _ALL - {"router"}


@dataclass(frozen=True)
class QuantScheme:
    """One weight format.

    bits         stored bits per element
    block_size   elements sharing one scale along the last axis (default for blocked schemes), None if unscaled
    scale_bytes  bytes per stored block scale (1 = E8M0, 4 = float32), 0 if unscaled
    fixed_block  True when the format fixes the block size (MXFP4: 32 by the OCP spec)
    parts        model parts the scheme may be applied to
    """

    name: str
    bits: int
    block_size: int | None
    scale_bytes: int
    fixed_block: bool
    parts: frozenset[str]
    description: str

    @property
    def blocked(self) -> bool:
        return self.block_size is not None

    def check_part(self, part: str) -> None:
        """Raise `SchemePartError` unless this scheme may be applied to `part`."""
        if part not in PARTS:
            raise SchemePartError(part, f"unknown model part; known parts: {', '.join(PARTS)}")
        if part not in self.parts:
            allowed = ", ".join(p for p in PARTS if p in self.parts)
            raise SchemePartError(part, f"scheme {self.name!r} does not apply to {part!r}; it applies to: {allowed}")


SCHEMES: dict[str, QuantScheme] = {
    s.name: s
    for s in (
        QuantScheme(
            "mxfp4", bits=4, block_size=32, scale_bytes=1, fixed_block=True, parts=frozenset({"experts"}),
            description="checkpoint MXFP4 kept as is (FP4 e2m1 codes, E8M0 scale per 32); QMoE quant_type='fp4'",
        ),
        QuantScheme(
            "int8", bits=8, block_size=32, scale_bytes=4, fixed_block=False, parts=_NOT_ROUTER,
            description="block-wise int8, float32 scales; MatMulNBits / GatherBlockQuantized / QMoE bits=8",
        ),
        QuantScheme(
            "int8_b128", bits=8, block_size=128, scale_bytes=4, fixed_block=False, parts=_NOT_ROUTER,
            description="block-wise int8 in blocks of 128 (a quarter of int8's scale bytes; coarser scales)",
        ),
        QuantScheme(
            "int4", bits=4, block_size=32, scale_bytes=4, fixed_block=False, parts=_NOT_ROUTER,
            description="block-wise int4, float32 scales; MatMulNBits / GatherBlockQuantized / QMoE bits=4",
        ),
        QuantScheme(
            "fp16", bits=16, block_size=None, scale_bytes=0, fixed_block=False, parts=_ALL,
            description="IEEE half precision, round to nearest even",
        ),
        QuantScheme(
            "fp32", bits=32, block_size=None, scale_bytes=0, fixed_block=False, parts=_ALL,
            description="IEEE single precision (bf16 checkpoint values widen exactly)",
        ),
    )
}


def get_scheme(name: str) -> QuantScheme:
    """The registry row for `name`; an unknown name raises `UnknownSchemeError` listing the known ones."""
    try:
        return SCHEMES[name]
    except KeyError:
        raise UnknownSchemeError(name, tuple(SCHEMES)) from None


def packed_nbytes(
    scheme: QuantScheme | str,
    shape: tuple[int, ...],
    *,
    block_size: int | None = None,
    asymmetric: bool = False,
    name: str = "weight",
) -> int:
    """Bytes a tensor of `shape` takes once packed under `scheme` (codes + scales + zero points).

    block_size overrides the scheme's default for int4/int8 (a power of two in 16..256);
    asymmetric adds the packed zero points the integer packers emit.
    """
    s = get_scheme(scheme) if isinstance(scheme, str) else scheme
    if not shape or any(int(d) < 0 for d in shape):
        raise LayoutError(name, f"expected a non-empty shape of non-negative sizes, got {list(shape)}")
    if not s.blocked:
        if block_size is not None or asymmetric:
            raise LayoutError(name, f"scheme {s.name!r} has no blocks, scales or zero points")
        return math.prod(shape) * s.bits // 8
    bs = s.block_size if block_size is None else block_size
    if s.fixed_block and bs != s.block_size:
        raise BlockSizeError(name, f"scheme {s.name!r} fixes the block size at {s.block_size}, got {bs}")
    if s.fixed_block and asymmetric:
        raise LayoutError(name, f"scheme {s.name!r} is symmetric and has no zero points")
    check_block_size(bs, name)
    *lead, k = shape
    rows = math.prod(lead)
    if s.fixed_block and k % bs:
        raise BlockSizeError(name, f"last axis {k} must be a multiple of {bs} for {s.name!r}")
    nb = -(-k // bs)
    codes = rows * nb * bs * s.bits // 8
    scales = rows * nb * s.scale_bytes
    zero_points = rows * (-(-nb * s.bits // 8)) if asymmetric else 0
    return codes + scales + zero_points
