"""Boundary checks of a lowered graph: only the custom ops the target keeps, the ops it expects, no float experts, and
no op the target's execution provider has no kernel for (targets/kernels/)."""

from __future__ import annotations

import numpy as np

from gptoss.ir.graph import GPTOSS_DOMAIN, Graph

from ..base import Target, TargetError


# Ops ONNX Runtime resolves itself before any provider sees them: Constant nodes become initializers at load,
# CastLike is defined by the standard as a function of Cast.
_RESOLVED_BY_ORT = {"Constant": None, "CastLike": "Cast"}


def graph_ops(graph: Graph) -> set[str]:
    """Every op the graph runs: its nodes', with the gptoss functions it keeps replaced by their bodies' ops, and the
    ops inside every subgraph (an If's branches) too."""
    ops = {op for op in nodes_ops(graph.nodes) if not op.startswith(f"{GPTOSS_DOMAIN}.")}
    for fn in graph.functions.values():
        ops |= nodes_ops(fn.node)
    ops = {_RESOLVED_BY_ORT.get(op, op) for op in ops}
    return ops - {None}


def nodes_ops(nodes) -> set[str]:
    """The ops of `nodes` (NodeProtos) as `domain.Op`, descending into their subgraph attributes."""
    ops = set()
    for n in nodes:
        ops.add(f"{n.domain}.{n.op_type}" if n.domain else n.op_type)
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                ops |= nodes_ops(sub.node)
    return ops


def check_lowered(graph: Graph, target: Target) -> None:
    left = sorted({n.op_type for n in graph.nodes if n.domain == GPTOSS_DOMAIN} - set(target.keeps))
    if left:
        raise TargetError(f"target {target.name}: custom ops left after lowering: {left}")
    missing = [op for op in target.ops if op not in graph.ops()]
    if missing:
        raise TargetError(f"target {target.name}: lowered graph lacks {missing}")
    if target.kernels:
        from ..kernels import kernels

        covered = frozenset().union(*(kernels(k) for k in target.kernels))
        uncovered = sorted(graph_ops(graph) - covered)
        if uncovered:
            lists = ", ".join(f"targets/kernels/{k}.txt" for k in target.kernels)
            raise TargetError(f"target {target.name}: its execution provider ({target.provider.name}) has no kernel "
                              f"for {uncovered} ({lists})")
    float_experts = sorted(_float_expert_weights(graph))
    if float_experts:
        raise TargetError(f"target {target.name}: float expert weights left: {float_experts[:3]}")


def _float_expert_weights(graph: Graph) -> set[str]:
    """Expert weight matrices stored as floats: the weight inputs of the MoE ops (fc1, fc2) and any MatMul operand
    that belongs to the experts. Scales and biases may be float; the weights must stay packed."""
    weights = set()
    for node in graph.nodes:
        if node.op_type in ("QMoE", "MoE"):
            weights |= {node.input[2], node.input[5]}
        elif node.op_type == "MatMul":
            weights.add(node.input[1])
    return {name for name in weights if name in graph.initializers and graph.initializers[name].part == "experts"
            and np.issubdtype(np.dtype(graph.initializers[name].dtype), np.floating)}
