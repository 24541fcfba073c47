"""gptoss.MoE -> com.microsoft.QMoE quant_type=fp4: the checkpoint's own MXFP4 bytes, exact.

    weights  uint8 [E, N, K/2]        K-packed, low nibble first (gptoss.quant.mxfp4.pack_qmoe_fp4: a reshape)
    scales   FLOAT8E8M0 [E, N, K/32]  the checkpoint's exponent bytes as they are
    global scales 1 per expert; interleaved SwiGLU (swiglu_fusion=1) with the node's limit and alpha
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from gptoss.bundle.manifest import GraphContract
from gptoss.ir.graph import GPTOSS_DOMAIN, MS_DOMAIN, Graph, LazyTensor, node_attributes
from gptoss.quant.mxfp4 import BLOCK, pack_qmoe_fp4

from ..base import LoweringContext, TargetError
from .common import canonical


@dataclass(frozen=True)
class MoeToQMoE:
    name = "moe_to_qmoe"

    def __call__(self, graph: Graph, contract: GraphContract, ctx: LoweringContext) -> GraphContract:
        if ctx.schemes["experts"] != "mxfp4":
            raise TargetError(f"{self.name} lowers MXFP4 experts only, not {ctx.schemes['experts']!r}")
        moes = graph.nodes_of("MoE", GPTOSS_DOMAIN)
        if not moes:
            return contract
        num_experts = graph.initializers[moes[0].input[2]].shape[0]
        ones = graph.weight(LazyTensor("model.experts.global_scale", (num_experts,), np.float32,
                                       lambda: np.ones(num_experts, np.float32), "experts"))
        for node in moes:
            graph.replace_node(node, [self._qmoe(graph, node, ones)])
        graph.opsets.setdefault(MS_DOMAIN, 1)
        return contract

    @staticmethod
    def _qmoe(graph: Graph, node, ones: str):
        x, logits, gu_blocks, gu_scales, gu_bias, d_blocks, d_scales, d_bias = node.input
        attrs = node_attributes(node)
        inputs = [x, logits,
                  _weights(graph, gu_blocks, gu_scales), _scales(graph, gu_scales), gu_bias,
                  _weights(graph, d_blocks, d_scales), _scales(graph, d_scales), d_bias,
                  "", "", "", "", "", "", "", ones, ones]
        return helper.make_node(
            "QMoE", inputs, list(node.output), name=node.name, domain=MS_DOMAIN,
            k=attrs["top_k"], activation_type="swiglu", swiglu_fusion=1, swiglu_limit=float(attrs["swiglu_limit"]),
            activation_alpha=float(attrs["swiglu_alpha"]), activation_beta=1.0, normalize_routing_weights=1,
            quant_type="fp4", weights_prepacked=1, expert_weight_bits=4, block_size=BLOCK)


def _weights(graph: Graph, blocks_name: str, scales_name: str) -> str:
    e, n, groups, _ = graph.initializers[blocks_name].shape
    read, blocks_key, scales_key = graph.source, canonical(blocks_name), canonical(scales_name)
    return graph.weight(LazyTensor(
        f"{blocks_name}.qmoe", (e, n, groups * 16), np.uint8,
        lambda: pack_qmoe_fp4(read(blocks_key), read(scales_key), name=blocks_key)[0], "experts"))


def _scales(graph: Graph, scales_name: str) -> str:
    src = graph.initializers[scales_name]
    return graph.weight(LazyTensor(f"{scales_name}.e8m0", src.shape, np.uint8, src.produce, "experts",
                                   onnx_type=TensorProto.FLOAT8E8M0))
