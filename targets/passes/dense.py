"""MatMul(x, W [in, out] fp32) -> com.microsoft.MatMulNBits(x, W as int8 | int4 blocks along `in`), per part.

    weight  uint8 [N, nb, block*bits/8]        the checkpoint's own [out, in] = [N, K] (MatMulNBits' layout),
                                               symmetric, LSB first (gptoss.quant.blockwise.pack_matmul_nbits)
    scales  float32 [N * nb]                   nb = ceil(K / block): a last partial block is zero-padded
A part whose scheme is not a block-wise integer one (fp32) keeps its MatMul.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import helper

from gptoss.bundle.manifest import GraphContract
from gptoss.ir.graph import MS_DOMAIN, Graph, LazyTensor
from gptoss.quant.blockwise import pack_matmul_nbits
from gptoss.quant.schemes import get_scheme

from ..base import LoweringContext
from .common import canonical, integer_bits, memo_quantize


@dataclass(frozen=True)
class DenseToMatMulNBits:
    """accuracy_level: MatMulNBits' compute type (0: fp32 activations, 4: int8 activations)."""

    accuracy_level: int = 0
    name = "dense_to_matmul_nbits"

    def __call__(self, graph: Graph, contract: GraphContract, ctx: LoweringContext) -> GraphContract:
        for node in list(graph.nodes):
            if node.op_type != "MatMul" or node.input[1] not in graph.initializers:
                continue
            weight = graph.initializers[node.input[1]]
            scheme = ctx.schemes.get(weight.part, "fp32")
            bits = integer_bits(scheme)
            if bits is not None:
                graph.replace_node(node, [self._matmul_nbits(graph, node, weight, bits, get_scheme(scheme).block_size)])
        graph.drop_unused()
        graph.opsets.setdefault(MS_DOMAIN, 1)
        return contract

    def _matmul_nbits(self, graph: Graph, node, weight: LazyTensor, bits: int, block: int):
        K, N = weight.shape
        take = memo_quantize(graph.source, canonical(weight.name), bits, block, pack_matmul_nbits)
        nb = -(-K // block)                         # the last block zero-padded (MatMulNBits takes K % block)
        data = graph.weight(LazyTensor(f"{weight.name}.q{bits}", (N, nb, block * bits // 8), np.uint8,
                                       lambda: take(0)().reshape(N, nb, -1), weight.part))
        dtype = np.dtype(weight.dtype)              # the activations' dtype: MatMulNBits wants its scales in it
        scales = graph.weight(LazyTensor(f"{weight.name}.scales", (N * nb,), dtype,
                                         lambda: take(1)().reshape(-1).astype(dtype, copy=False), weight.part))
        return helper.make_node("MatMulNBits", [node.input[0], data, scales], list(node.output), name=node.name,
                                domain=MS_DOMAIN, K=K, N=N, bits=bits, block_size=block,
                                accuracy_level=self.accuracy_level)
