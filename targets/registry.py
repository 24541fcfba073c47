"""Targets as data: one frozen row per target, naming its execution provider, options, lowering passes,
shape regime and the weight scheme of each model part.

A target's pipeline is the literal, ordered tuple `passes`; each pass is a function Graph -> Graph over the
portable graph (see targets/passes.py). Unknown target names are errors that list the known ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from gptoss.export.errors import ExportError
from gptoss.quant.schemes import PARTS  # the one vocabulary of model parts, re-exported

__all__ = ["PARTS", "TARGETS", "Target", "get_target"]


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    execution_provider: str
    passes: tuple[str, ...]                       # names in targets.passes.PASSES, applied in order
    quant: MappingProxyType                       # part -> default scheme
    allowed: MappingProxyType                     # part -> schemes this target's kernels run
    provider_options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    session_options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    shapes: str = "dynamic"                       # "dynamic" | "static" (NPUs)
    kv_dtype: str = "float32"
    ops: tuple[str, ...] = ()                     # contrib ops the lowered graph is expected to hold
    options: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))   # knobs for the passes

    def scheme_for(self, part: str, overrides: dict[str, str] | None = None) -> str:
        scheme = (overrides or {}).get(part, self.quant[part])
        if scheme not in self.allowed[part]:
            raise ExportError(f"target {self.name!r} cannot run {part} as {scheme!r}; "
                              f"it can: {', '.join(self.allowed[part])}")
        return scheme


def _m(**kw) -> MappingProxyType:
    return MappingProxyType(kw)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target(
            name="portable",
            description="Standard ONNX ops only (custom ops as model-local functions); any ONNX Runtime, fp32.",
            execution_provider="CPUExecutionProvider",
            passes=(),
            quant=_m(experts="mxfp4", attention="fp32", router="fp32", embedding="fp32", unembedding="fp32"),
            allowed=_m(experts=("mxfp4",), attention=("fp32",), router=("fp32",), embedding=("fp32",),
                       unembedding=("fp32",)),
        ),
        Target(
            name="cpu",
            description="ONNX Runtime CPU with contrib ops: QMoE (exact MXFP4), GroupQueryAttention with sinks, "
                        "MatMulNBits, GatherBlockQuantized.",
            execution_provider="CPUExecutionProvider",
            passes=("moe_to_qmoe", "attention_to_gqa", "dense_to_matmul_nbits", "embedding_to_gather_quantized"),
            quant=_m(experts="mxfp4", attention="int8", router="fp32", embedding="int8", unembedding="int8"),
            allowed=_m(experts=("mxfp4",), attention=("fp32", "int8", "int4"), router=("fp32",),
                       embedding=("fp32", "fp16", "int8", "int4"), unembedding=("fp32", "int8", "int4")),
            session_options=_m(graph_optimization_level="ORT_ENABLE_ALL"),
            ops=("com.microsoft.QMoE", "com.microsoft.GroupQueryAttention"),
            # MatMulNBits with int8 activations: at accuracy level 0 (fp32 activations) the 20b unembedding
            # alone took 5+ s per decode step on 2 cores; level 4 runs it at memory speed (docs/benchmarks.md).
            options=_m(matmul_accuracy_level=4, kv_cache="shared"),
        ),
    )
}


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ExportError(f"unknown target {name!r}; known targets: {', '.join(sorted(TARGETS))}") from None
