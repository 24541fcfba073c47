"""What a target is: one frozen row naming its execution provider, its ordered passes, its shapes, its KV dtype,
its weight schemes and its ahead-of-time step. Each target is one small file beside this one (cpu.py,
portable.py, ...) that defines `TARGET`; `registry.py` finds them.

    Target
      provider       ExecutionProvider: the ONNX Runtime EP name, and the package that brings it
      passes         an ordered tuple of typed passes (targets/passes), each (graph, contract, ctx) -> contract
      keeps          the gptoss custom ops the target runs as they are (their ONNX function bodies), unlowered
      ops            ops the lowered graph must hold (a boundary check)
    kernels        the lists of ops its execution provider runs (targets/kernels/<name>.txt), the provider's own
                   first, then any the provider hands ops to (CoreML: the CPU); every op of the lowered graph must be
                   on one of them
      activations    the dtype the graph computes in ("float32", or "float16" on GPUs); the graph builder emits it
    kv_dtype       the KV cache's dtype; the graph builder emits it
    kv_dtypes      other cache dtypes its passes can lower to, asked for with `--kv-cache` (cpu: int8)
    kv_device      the runtime keeps the (shared) cache on the provider's device rather than in host memory
      shapes         Dynamic() | Static(chunk, context); the graph builder emits them
      quant/allowed  per part, the default scheme and the schemes the target's kernels run
      split          cut each graph into parts (NPU context sizes); None: one graph
    aot            ahead-of-time compilation of the written graphs, run on `gptoss-export export --aot` (None: the
                   target has none)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Mapping, Protocol

from gptoss.bundle.manifest import GraphContract
from gptoss.bundle.shapes import Dynamic, Shapes
from gptoss.errors import GptOssError
from gptoss.ir.graph import EMBEDDING_OUTPUT, Graph, layer_output
from gptoss.quant.schemes import PARTS


class TargetError(GptOssError):
    """An unknown target, a scheme a target cannot run, or a lowered graph that fails a target's checks."""


@dataclass(frozen=True)
class LoweringContext:
    """What every pass may read besides the graph: the weight scheme chosen for each part, the KV cache dtype
    asked for when it differs from the one the graph was built with (None: keep it), and whether the graph must be
    capturable (the target has `graph_capture`: no CPU work inside the decode step)."""

    schemes: Mapping[str, str]
    kv_dtype: str | None = None
    capturable: bool = False


class Pass(Protocol):
    """A lowering pass: rewrites `graph` in place and returns the contract the graph speaks afterwards."""

    name: str

    def __call__(self, graph: Graph, contract: GraphContract, ctx: LoweringContext) -> GraphContract: ...


class AotStep(Protocol):
    """Ahead-of-time compilation of a written bundle's graphs (e.g. an EP context binary): role -> its part files in,
    role -> the files to run instead out (it removes what they replace)."""

    def __call__(self, bundle_dir: Path, graph_files: Mapping[str, tuple[str, ...]],
                 target: "Target") -> Mapping[str, tuple[str, ...]]: ...


@dataclass(frozen=True)
class Split:
    """Cut every graph into parts run in order (an NPU compiles each into its own context, of bounded size): the
    embedding alone, then `layers_per_part` layers per part, then the head (final norm, unembedding) alone."""

    layers_per_part: int
    embedding_alone: bool = True
    head_alone: bool = True

    def cuts(self, num_layers: int) -> list[str]:
        """The values to cut after (ir conventions), in graph order."""
        cuts = [EMBEDDING_OUTPUT] if self.embedding_alone else []
        ends = list(range(self.layers_per_part - 1, num_layers - 1, self.layers_per_part))
        if self.head_alone:
            ends.append(num_layers - 1)
        return cuts + [layer_output(i) for i in sorted(set(ends))]


@dataclass(frozen=True)
class ExecutionProvider:
    name: str                           # the ONNX Runtime provider name, e.g. "CPUExecutionProvider"
    package: str = "onnxruntime"        # the pip distribution that brings it
    plugin: bool = False                # a plugin library beside the stock onnxruntime (else part of the package)


def frozen(**kw) -> MappingProxyType:
    return MappingProxyType(kw)


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    provider: ExecutionProvider
    passes: tuple[Pass, ...]
    quant: Mapping[str, str]                    # part -> default scheme
    allowed: Mapping[str, tuple[str, ...]]      # part -> schemes this target's kernels run
    keeps: frozenset[str] = frozenset()         # gptoss custom ops left as functions ("MoE", "Attention", ...)
    ops: tuple[str, ...] = ()                   # ops the lowered graph is expected to hold ("domain.Op")
    kernels: tuple[str, ...] = ()               # targets/kernels/<name>.txt: the ops its provider runs
    activations: str = "float32"
    kv_dtype: str = "float32"
    kv_dtypes: tuple[str, ...] = ()
    kv_device: bool = False
    shapes: Shapes = Dynamic()
    provider_options: Mapping[str, str] = field(default_factory=frozen)
    session_options: Mapping[str, object] = field(default_factory=frozen)
    graph_capture: str | None = None            # provider option that captures the decode step (needs lengths as inputs)
    split: Split | None = None
    aot: AotStep | None = None

    def __post_init__(self):
        if set(self.quant) != set(PARTS) or set(self.allowed) != set(PARTS):
            raise TargetError(f"target {self.name!r}: quant and allowed must name every part {list(PARTS)}")

    def scheme_for(self, part: str, overrides: Mapping[str, str] | None = None) -> str:
        scheme = (overrides or {}).get(part, self.quant[part])
        if scheme not in self.allowed[part]:
            raise TargetError(f"target {self.name!r} cannot run {part} as {scheme!r}; "
                              f"it can: {', '.join(self.allowed[part])}")
        return scheme

    def cache_dtype(self, requested: str | None) -> str | None:
        """The KV cache dtype to lower to: None for the target's own (`kv_dtype`), else one of `kv_dtypes`."""
        if requested in (None, self.kv_dtype):
            return None
        if requested not in self.kv_dtypes:
            raise TargetError(f"target {self.name!r} keeps its KV cache as {', '.join((self.kv_dtype, *self.kv_dtypes))}"
                              f"; not {requested!r}")
        return requested

    def schemes(self, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
        """Every part's scheme: the target's defaults with `overrides` (part -> scheme) applied and checked."""
        unknown = sorted(set(overrides or {}) - set(PARTS))
        if unknown:
            raise TargetError(f"unknown part(s) {unknown}; known parts: {', '.join(PARTS)}")
        return {part: self.scheme_for(part, overrides) for part in PARTS}
