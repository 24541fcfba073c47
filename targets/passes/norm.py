"""RMSNormalization (ai.onnx 23), x / sqrt(mean(x^2) + eps) * scale over the last axis, for providers without a
kernel for it:

    RMSNormToSimplified   -> SimplifiedLayerNormalization, ONNX Runtime's older fused form of the same math
                             (accumulated in float32; registered in the default domain), which DirectML has
    RMSNormToOps          -> Mul, ReduceMean, Add, Sqrt, Reciprocal, Mul (float32 graphs; OpenVINO)
"""

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


@dataclass(frozen=True)
class RMSNormToOps:
    """RMSNormalization -> plain ops, for providers with no kernel for it (OpenVINO): in float32,
    x * 1 / sqrt(mean(x^2, last axis) + eps) * scale."""

    name = "rms_norm_to_ops"

    def __call__(self, graph: Graph, contract: GraphContract, ctx: LoweringContext) -> GraphContract:
        for node in graph.nodes_of("RMSNormalization"):
            at, end = graph.nodes.index(node), len(graph.nodes)
            _decompose(graph, node)
            emitted = graph.nodes[end:]
            del graph.nodes[end:]
            graph.nodes[at:at + 1] = emitted
        return contract


def _decompose(g: Graph, node) -> None:
    import numpy as np

    x, scale = node.input
    eps, p = float(node_attributes(node).get("epsilon", 1e-5)), node.name
    mean = g.op("ReduceMean", [g.op("Mul", [x, x], f"{p}/square"), g.const([-1])], f"{p}/mean", keepdims=1)
    inv = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [mean, g.const(eps, np.float32)], f"{p}/plus_eps")],
                                   f"{p}/rms")], f"{p}/inv_rms")
    g.node("Mul", [g.op("Mul", [x, inv], f"{p}/normalized"), scale], f"{p}/scaled", [node.output[0]])
