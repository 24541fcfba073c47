"""gptoss.MoE -> com.microsoft.QMoE, in the expert scheme the target chose:

    mxfp4, fp4_layout="k_packed" (CPU)  quant_type="fp4", weights_prepacked=1: weights uint8 [E, N, K/2] K-packed,
                                        low nibble first (quant.mxfp4.pack_qmoe_fp4: the checkpoint's own bytes)
    mxfp4, fp4_layout="n_packed" (CUDA) quant_type="fp4": weights uint8 [E, K, N/2] N-packed
                                        (quant.mxfp4.pack_qmoe_fp4_n_packed); exact either way
    in both: scales FLOAT8E8M0 [E, N, K/32] (the checkpoint's exponent bytes), per-expert global scales 1
    int8, block 32                      quant_type="int", 8 bits: MXFP4 re-encoded exactly (quant.mxfp4.
                                        requantize_mxfp4_to_int8: codes 2v + 128, scales 2^(e-128))
    int8 / int4, other blocks           quant_type="int": the decoded weights quantized block-wise (lossy)
    int weights uint8 [E, N, K*bits/8], scales [E, N, K/block] in the activations' dtype (quant.blockwise.pack_qmoe_int)

Interleaved SwiGLU (swiglu_fusion=1) with the node's limit and alpha; routing: softmax over the top-k.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from onnx import TensorProto, helper

from gptoss.bundle.manifest import GraphContract
from gptoss.ir.graph import GPTOSS_DOMAIN, MS_DOMAIN, Graph, LazyTensor, node_attributes
from gptoss.quant import blockwise
from gptoss.quant.mxfp4 import BLOCK, decode_mxfp4, pack_qmoe_fp4, pack_qmoe_fp4_n_packed, requantize_mxfp4_to_int8
from gptoss.quant.schemes import get_scheme

from ..base import LoweringContext, TargetError
from .common import canonical

FP4_LAYOUTS = ("k_packed", "n_packed")


@dataclass(frozen=True)
class MoeToQMoE:
    """fp4_layout: how fp4 weights are packed ("k_packed" for the CPU kernel, "n_packed" for CUDA's);
    int_block: the block size of the integer schemes (TRT-RTX takes 128 only)."""

    fp4_layout: str = "k_packed"
    int_block: int = 32
    name = "moe_to_qmoe"

    def __post_init__(self):
        if self.fp4_layout not in FP4_LAYOUTS:
            raise TargetError(f"{self.name}: fp4_layout {self.fp4_layout!r}; known: {list(FP4_LAYOUTS)}")

    def __call__(self, graph: Graph, contract: GraphContract, ctx: LoweringContext) -> GraphContract:
        scheme = ctx.schemes["experts"]
        if scheme not in ("mxfp4", "int8", "int4"):
            raise TargetError(f"{self.name} lowers mxfp4, int8 or int4 experts, not {scheme!r}")
        moes = graph.nodes_of("MoE", GPTOSS_DOMAIN)
        if not moes:
            return contract
        num_experts = graph.initializers[moes[0].input[2]].shape[0]
        ones = graph.weight(LazyTensor("model.experts.global_scale", (num_experts,), np.float32,
                                       lambda: np.ones(num_experts, np.float32), "experts"))
        for node in moes:
            graph.replace_node(node, [self._qmoe(graph, node, scheme, ones)])
        graph.opsets.setdefault(MS_DOMAIN, 1)
        return contract

    def _qmoe(self, graph: Graph, node, scheme: str, ones: str):
        x, logits, gu_blocks, gu_scales, gu_bias, d_blocks, d_scales, d_bias = node.input
        dtype = np.dtype(graph.initializers[gu_bias].dtype)           # the activations' dtype
        if scheme == "mxfp4":
            fc1, fc2 = self._fp4(graph, gu_blocks, gu_scales), self._fp4(graph, d_blocks, d_scales)
            quant = dict(quant_type="fp4", expert_weight_bits=4, block_size=BLOCK,
                         **({"weights_prepacked": 1} if self.fp4_layout == "k_packed" else {}))
            tail = ["", "", "", "", "", "", "", ones, ones]
        else:
            bits = get_scheme(scheme).bits
            fc1 = _int_weights(graph, gu_blocks, gu_scales, bits, self.int_block, dtype)
            fc2 = _int_weights(graph, d_blocks, d_scales, bits, self.int_block, dtype)
            quant = dict(quant_type="int", expert_weight_bits=bits, block_size=self.int_block, weights_prepacked=0)
            tail = []
        attrs = node_attributes(node)
        return helper.make_node(
            "QMoE", [x, logits, fc1[0], fc1[1], gu_bias, fc2[0], fc2[1], d_bias, *tail], list(node.output),
            name=node.name, domain=MS_DOMAIN, k=attrs["top_k"], activation_type="swiglu", swiglu_fusion=1,
            swiglu_limit=float(attrs["swiglu_limit"]), activation_alpha=float(attrs["swiglu_alpha"]),
            activation_beta=1.0, normalize_routing_weights=1, **quant)

    def _fp4(self, graph: Graph, blocks_name: str, scales_name: str) -> tuple[str, str]:
        e, n, groups, _ = graph.initializers[blocks_name].shape
        read, blocks_key, scales_key = graph.source, canonical(blocks_name), canonical(scales_name)
        if self.fp4_layout == "k_packed":
            shape, pack = (e, n, groups * 16), lambda: pack_qmoe_fp4(read(blocks_key), read(scales_key),
                                                                     name=blocks_key)[0]
        else:
            shape, pack = (e, groups * BLOCK, n // 2), lambda: pack_qmoe_fp4_n_packed(np.asarray(read(blocks_key)),
                                                                                      name=blocks_key)
        weights = graph.weight(LazyTensor(f"{blocks_name}.qmoe_{self.fp4_layout}", shape, np.uint8, pack, "experts"))
        src = graph.initializers[scales_name]
        scales = graph.weight(LazyTensor(f"{scales_name}.e8m0", src.shape, np.uint8, src.produce, "experts",
                                         onnx_type=TensorProto.FLOAT8E8M0))
        return weights, scales


def _int_weights(graph: Graph, blocks_name: str, scales_name: str, bits: int, block: int,
                 dtype: np.dtype) -> tuple[str, str]:
    """QMoE int weights and scales of one expert tensor, produced once for both (the writer asks in turn)."""
    e, n, groups, _ = graph.initializers[blocks_name].shape
    k = groups * BLOCK
    if k % block:
        raise TargetError(f"{blocks_name}: K={k} is not a multiple of the block size {block}")
    read, blocks_key, scales_key = graph.source, canonical(blocks_name), canonical(scales_name)

    def quantize() -> blockwise.PackedBlockwise:
        """One expert at a time: a whole 20b expert tensor in float32 would take 2 GB, its quantizer more."""
        blocks, scales = np.asarray(read(blocks_key)), np.asarray(read(scales_key))
        packed = []
        for b, s in zip(blocks, scales):
            if bits == 8 and block == BLOCK:                  # exact: every FP4 value is a multiple of 0.5
                q = requantize_mxfp4_to_int8(b[None], s[None], name=blocks_key)
            else:
                q = blockwise.quantize_blockwise(decode_mxfp4(b[None], s[None], blocks_key), bits=bits,
                                                 block_size=block, name=blocks_key)
            packed.append(blockwise.pack_qmoe_int(q, name=blocks_key))
        return blockwise.PackedBlockwise(np.concatenate([p.data for p in packed]),
                                         np.concatenate([p.scales for p in packed]), None, bits, block, k)

    take = _once(quantize)
    data = graph.weight(LazyTensor(f"{blocks_name}.q{bits}b{block}", (e, n, k * bits // 8), np.uint8,
                                   lambda: take(0), "experts"))
    scales = graph.weight(LazyTensor(f"{blocks_name}.q{bits}b{block}.scales", (e, n, k // block), dtype,
                                     lambda: take(1).astype(dtype, copy=False), "experts"))
    return data, scales


def _once(make: Callable[[], blockwise.PackedBlockwise]) -> Callable[[int], np.ndarray]:
    """take(0) -> data, take(1) -> scales of one `make()`, computed once and freed after the scales."""
    memo: dict = {}

    def take(i: int) -> np.ndarray:
        if "p" not in memo:
            memo["p"] = make()
        arr = memo["p"].data if i == 0 else memo["p"].scales
        if i == 1:
            memo.clear()
        return arr

    return take
