"""Boundary checks of a lowered graph: only the custom ops the target keeps, the ops it expects, no float experts."""

from __future__ import annotations

import numpy as np

from gptoss.ir.graph import GPTOSS_DOMAIN, Graph

from ..base import Target, TargetError


def check_lowered(graph: Graph, target: Target) -> None:
    left = sorted({n.op_type for n in graph.nodes if n.domain == GPTOSS_DOMAIN} - set(target.keeps))
    if left:
        raise TargetError(f"target {target.name}: custom ops left after lowering: {left}")
    missing = [op for op in target.ops if op not in graph.ops()]
    if missing:
        raise TargetError(f"target {target.name}: lowered graph lacks {missing}")
    float_experts = [t.name for t in graph.initializers.values()
                     if t.part == "experts" and np.dtype(t.dtype) == np.float32 and len(t.shape) >= 3]
    if float_experts:
        raise TargetError(f"target {target.name}: float expert weights left: {float_experts[:3]}")
