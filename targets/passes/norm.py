"""RMSNormalization (ai.onnx 23) -> SimplifiedLayerNormalization, ONNX Runtime's older fused form of the same math
(x / sqrt(mean(x^2) + eps) * scale over the last axis, accumulated in float32), for execution providers that have a
kernel for it but none for the opset-23 op (DirectML). ORT registers it in the default domain."""

from __future__ import annotations

from dataclasses import dataclass

from onnx import helper

from gptoss.bundle.manifest import GraphContract
from gptoss.ir.graph import Graph, node_attributes

from ..base import LoweringContext


@dataclass(frozen=True)
class RMSNormToSimplified:
    name = "rms_norm_to_simplified"

    def __call__(self, graph: Graph, contract: GraphContract, ctx: LoweringContext) -> GraphContract:
        for node in graph.nodes_of("RMSNormalization"):
            attrs = node_attributes(node)
            graph.replace_node(node, [helper.make_node(
                "SimplifiedLayerNormalization", list(node.input), list(node.output), name=node.name,
                axis=attrs.get("axis", -1), epsilon=attrs.get("epsilon", 1e-5), stash_type=attrs.get("stash_type", 1))])
        return contract
