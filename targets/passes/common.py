"""Helpers the passes share: checkpoint names of initializers, and block quantization served lazily."""

from __future__ import annotations

from typing import Callable

import numpy as np

from gptoss.quant.blockwise import quantize_blockwise
from gptoss.quant.schemes import get_scheme

ROW_CHUNK = 8192   # rows quantized at a time: bounds the exporter's memory on the 201k-row tables


def canonical(initializer: str) -> str:
    """The checkpoint's canonical name of a portable-graph initializer (`model.layers.0.qkv.weight`)."""
    return initializer.removeprefix("model.")


def integer_bits(scheme: str) -> int | None:
    """Bits of a block-wise integer scheme (int8 -> 8, int4 -> 4); None for float and MXFP4 schemes."""
    row = get_scheme(scheme)
    return row.bits if row.blocked and not row.fixed_block else None


def memo_quantize(read, name: str, bits: int, block: int, pack) -> Callable[[int], Callable[[], np.ndarray]]:
    """Quantize + pack a [rows, K] weight once, in row chunks; `take(0)` produces its codes, `take(1)` its scales
    (the writer asks for them one after the other: the pair is freed after the scales)."""
    memo = {}

    def packed():
        if "p" not in memo:
            w = read(name)
            chunks = [pack(quantize_blockwise(np.asarray(w[r:r + ROW_CHUNK], np.float32), bits=bits,
                                              block_size=block, name=name), name=name)
                      for r in range(0, w.shape[0], ROW_CHUNK)]
            memo["p"] = (np.concatenate([c.data for c in chunks]), np.concatenate([c.scales for c in chunks]))
        return memo["p"]

    def take(i):
        def produce():
            arr = packed()[i]
            if i == 1:
                memo.clear()
            return arr
        return produce

    return take
