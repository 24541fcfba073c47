"""Create the onnxruntime session a bundle asks for, and check that the provider really took the graph.

Session options come from the manifest's `target.session_options` (ORT enum names as strings, dotted keys
as session config entries); the caller may override the provider and the thread count. External weights
stay memory-mapped: nothing here loads `model.weights` into Python or asks ORT to copy it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import onnxruntime as ort

from gptoss.bundle import Manifest

from .errors import BundleError, ProviderError
from .providers import attach_plugin, resolve

CPU = "CPUExecutionProvider"

# Manifest value names -> the ORT enum they select.
_ENUMS: dict[str, type] = {
    "graph_optimization_level": ort.GraphOptimizationLevel,
    "execution_mode": ort.ExecutionMode,
}
# Plain SessionOptions attributes a manifest may set.
_ATTRIBUTES = ("enable_cpu_mem_arena", "enable_mem_pattern", "enable_mem_reuse", "inter_op_num_threads",
               "intra_op_num_threads", "log_severity_level", "use_deterministic_compute")


@dataclass(frozen=True)
class SessionInfo:
    requested_provider: str
    providers: tuple[str, ...]          # what the session reports, in priority order
    fell_back: bool                     # the requested provider is not among them (allow_fallback=True)


def session_options(manifest: Manifest, threads: int | None) -> ort.SessionOptions:
    """The manifest's session options, plus `threads` (intra-op) when given."""
    so = ort.SessionOptions()
    for key, value in manifest.target.session_options.items():
        where = f"{manifest.path}: 'target.session_options.{key}'"
        if key in _ENUMS:
            enum = _ENUMS[key]
            try:
                setattr(so, key, getattr(enum, str(value)) if isinstance(value, str) else enum(value))
            except (AttributeError, ValueError, TypeError):
                known = [n for n in dir(enum) if n.startswith("ORT_")]
                raise BundleError(f"{where} is {value!r}; known: {known}") from None
        elif key == "config_entries" and isinstance(value, dict):
            for k, v in value.items():
                so.add_session_config_entry(str(k), str(v))
        elif "." in key:                # e.g. "session.disable_cpu_ep_fallback": "1"
            so.add_session_config_entry(key, str(value))
        elif key in _ATTRIBUTES:
            try:
                setattr(so, key, value)
            except TypeError:
                raise BundleError(f"{where} has the wrong type ({type(value).__name__})") from None
        else:
            known = sorted([*_ENUMS, *_ATTRIBUTES, "config_entries", "<dotted config entry>"])
            raise BundleError(f"{where} is not a session option this runtime knows; known: {known}")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        so.intra_op_num_threads = threads
    return so


NO_CPU_FALLBACK = "session.disable_cpu_ep_fallback"


def _attach(manifest: Manifest, provider: str | None, allow_fallback: bool, provider_options: dict[str, Any] | None,
            so: ort.SessionOptions) -> tuple[str, list | None]:
    """Attach the requested provider: (its ONNX Runtime name, the providers list for InferenceSession, None when a
    plugin EP was attached to `so` instead)."""
    p = resolve(provider or manifest.target.execution_provider)
    options = dict(provider_options if provider_options is not None
                   else manifest.target.provider_options if p.ep == manifest.target.execution_provider else {})
    if p.plugin is not None:
        try:
            attach_plugin(p, so, options)
            return p.ep, None
        except ProviderError:
            if not allow_fallback:
                raise
            return p.ep, [CPU]
    available = ort.get_available_providers()
    if p.ep not in available:
        if not allow_fallback:
            raise ProviderError(
                f"execution provider {p.ep!r} (target {manifest.target.name!r}) is not available in this "
                f"onnxruntime build; available: {available}. {p.install}, or pass allow_fallback=True to run on CPU")
        return p.ep, [CPU]
    if p.ep == CPU:
        return p.ep, [(CPU, options)] if options else [CPU]
    # ORT needs the CPU provider beside an accelerator for the few nodes it cannot place.
    return p.ep, [(p.ep, options), CPU]


def create_sessions(manifest: Manifest, provider: str | None = None, threads: int | None = None,
                    allow_fallback: bool = False, provider_options: dict[str, Any] | None = None,
                    ) -> tuple[dict[str, list[ort.InferenceSession]], SessionInfo]:
    """One InferenceSession per graph file of the bundle (role -> its parts' sessions, in order), on the manifest's
    (or the given) provider, each verified to have taken its graph."""
    so = session_options(manifest, threads)
    requested, providers = _attach(manifest, provider, allow_fallback, provider_options, so)
    if providers is not None and any((p[0] if isinstance(p, tuple) else p) == CPU for p in providers):
        # The CPU runs (asked for, or as the fallback allowed): a bundle's "no CPU fallback" (an NPU target's)
        # would make ORT refuse the session outright, so it is lifted for this run.
        so.add_session_config_entry(NO_CPU_FALLBACK, "0")
    sessions: dict[str, list[ort.InferenceSession]] = {}
    for role in manifest.graphs:
        sessions[role] = [_session(path, so, providers, requested, allow_fallback)
                          for path in manifest.graph_paths(role)]
    taken = tuple(sessions[next(iter(sessions))][0].get_providers())
    return sessions, SessionInfo(requested, taken, requested not in taken)


def _session(path, so, providers, requested: str, allow_fallback: bool) -> ort.InferenceSession:
    model_path = os.fspath(path)
    try:
        session = ort.InferenceSession(model_path, sess_options=so, providers=providers)
    except Exception as e:  # ORT raises its own Fail/InvalidGraph/RuntimeException types
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BundleError(f"{model_path}: onnxruntime could not load it on {requested}: {message}") from e
    taken = tuple(session.get_providers())
    if requested not in taken and not allow_fallback:
        raise ProviderError(f"{requested} did not take {model_path} (the session runs on {list(taken)}); "
                            f"pass allow_fallback=True to accept CPU")
    return session
