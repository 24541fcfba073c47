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

from .errors import ArgumentError, BundleError, ProviderError
from .providers import attach_plugin, resolve

CPU = "CPUExecutionProvider"

# What a manifest's target.session_options may hold: each known key with the values it accepts. Anything else is
# refused (naming the key): an unknown key is a typo or a newer runtime's option, and some ORT options write files
# (ep.context_file_path, optimized_model_filepath, profiling), which a bundle must not be able to ask for.
_ENUMS: dict[str, type] = {                 # SessionOptions attributes set from an ORT enum, by member name
    "graph_optimization_level": ort.GraphOptimizationLevel,
    "execution_mode": ort.ExecutionMode,
}
_BOOL, _THREADS, _SEVERITY = (False, True), range(0, 1025), range(0, 5)
_ATTRIBUTES: dict[str, tuple | range] = {    # plain SessionOptions attributes -> accepted values
    "enable_cpu_mem_arena": _BOOL, "enable_mem_pattern": _BOOL, "enable_mem_reuse": _BOOL,
    "use_deterministic_compute": _BOOL, "inter_op_num_threads": _THREADS, "intra_op_num_threads": _THREADS,
    "log_severity_level": _SEVERITY,
}
_FLAG = ("0", "1")
_CONFIG_ENTRIES: dict[str, tuple] = {       # dotted session config entries -> accepted values (strings)
    "session.disable_cpu_ep_fallback": _FLAG, "session.disable_prepacking": _FLAG,
    "session.use_env_allocators": _FLAG, "session.set_denormal_as_zero": _FLAG,
    "session.disable_quant_qdq": _FLAG, "session.disable_double_qdq_remover": _FLAG,
    "session.enable_quant_qdq_cleanup": _FLAG, "session.disable_aot_function_inlining": _FLAG,
    "session.inter_op.allow_spinning": _FLAG, "session.intra_op.allow_spinning": _FLAG,
    "session.force_spinning_stop": _FLAG, "optimization.enable_gelu_approximation": _FLAG,
    "mlas.enable_gemm_fastmath_arm64_bfloat16": _FLAG, "ep.share_ep_contexts": _FLAG,
    "session.qdq_matmulnbits_accuracy_level": ("0", "1", "2", "3", "4"),
}


@dataclass(frozen=True)
class SessionInfo:
    requested_provider: str
    providers: tuple[str, ...]          # what the session reports, in priority order
    fell_back: bool                     # the requested provider is not among them (allow_fallback=True)


def session_options(manifest: Manifest, threads: int | None, overrides: dict | None = None) -> ort.SessionOptions:
    """The manifest's session options, then `overrides` (the caller's, same keys and values, e.g.
    {"session.intra_op.allow_spinning": "0"}), plus `threads` (intra-op) when given. An option this runtime does not
    know, or a value out of its range: BundleError naming the manifest's key, ArgumentError for an override."""
    so = ort.SessionOptions()
    for key, value in manifest.target.session_options.items():
        _apply(so, key, value, f"{manifest.path}: 'target.session_options.{key}'")
    for key, value in (overrides or {}).items():
        try:
            _apply(so, key, value, f"session_options '{key}'")
        except BundleError as e:
            raise ArgumentError(str(e)) from None
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        so.intra_op_num_threads = threads
    return so


def _apply(so: ort.SessionOptions, key: str, value, where: str) -> None:
    if key in _ENUMS:
        setattr(so, key, _enum_member(_ENUMS[key], value, where))
    elif key in _ATTRIBUTES:
        setattr(so, key, _attribute(_ATTRIBUTES[key], value, where))
    elif key == "config_entries":
        if not isinstance(value, dict):
            raise BundleError(f"{where} must be an object of dotted config entries")
        for k, v in value.items():
            so.add_session_config_entry(k, _config_entry(k, v, f"{where[:-1]}.{k}'"))
    elif "." in key:                # e.g. "session.disable_cpu_ep_fallback": "1"
        so.add_session_config_entry(key, _config_entry(key, value, where))
    else:
        known = sorted([*_ENUMS, *_ATTRIBUTES, "config_entries", *_CONFIG_ENTRIES])
        raise BundleError(f"{where} is not a session option this runtime knows; known: {known}")


def _enum_member(enum: type, value, where: str):
    members = enum.__members__
    if isinstance(value, str) and value in members:
        return members[value]
    if isinstance(value, int) and not isinstance(value, bool):
        for member in members.values():
            if int(member) == value:
                return member
    raise BundleError(f"{where} is {value!r}; known: {list(members)}")


def _attribute(accepted: tuple | range, value, where: str):
    kind = bool if accepted == _BOOL else int
    if type(value) is not kind or value not in accepted:
        expected = "true or false" if kind is bool else f"an integer in [{accepted.start}, {accepted.stop - 1}]"
        raise BundleError(f"{where} is {value!r}; expected {expected}")
    return value


def _config_entry(key, value, where: str) -> str:
    if key not in _CONFIG_ENTRIES:
        raise BundleError(f"{where} is not a session config entry this runtime knows; known: "
                          f"{sorted(_CONFIG_ENTRIES)}")
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if text not in _CONFIG_ENTRIES[key]:
        raise BundleError(f"{where} is {value!r}; expected one of {list(_CONFIG_ENTRIES[key])} (a string)")
    return text


NO_CPU_FALLBACK = "session.disable_cpu_ep_fallback"


def _provider(manifest: Manifest, asked: str | None):
    """The provider `asked` for, else the manifest's: an unknown name from the manifest is an error naming it."""
    if asked is not None:
        return resolve(asked)
    try:
        return resolve(manifest.target.execution_provider)
    except ProviderError as e:
        raise ProviderError(f"{manifest.path}: 'target.execution_provider': {e}") from None


def _attach(manifest: Manifest, provider: str | None, allow_fallback: bool, provider_options: dict[str, Any] | None,
            so: ort.SessionOptions) -> tuple[str, list | None]:
    """Attach the requested provider: (its ONNX Runtime name, the providers list for InferenceSession, None when a
    plugin EP was attached to `so` instead)."""
    p = _provider(manifest, provider)
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
                f"execution provider {p.ep!r} (target {manifest.target.name!r} of {manifest.path}) is not available "
                f"in this onnxruntime build; available: {available}. {p.install}, or pass allow_fallback=True to run "
                f"on CPU")
        return p.ep, [CPU]
    if p.ep == CPU:
        return p.ep, [(CPU, options)] if options else [CPU]
    # ORT needs the CPU provider beside an accelerator for the few nodes it cannot place.
    return p.ep, [(p.ep, options), CPU]


def create_sessions(manifest: Manifest, provider: str | None = None, threads: int | None = None,
                    allow_fallback: bool = False, provider_options: dict[str, Any] | None = None,
                    overrides: dict | None = None) -> tuple[dict[str, list[ort.InferenceSession]], SessionInfo]:
    """One InferenceSession per graph file of the bundle (role -> its parts' sessions, in order), on the manifest's
    (or the given) provider, each verified to have taken its graph. overrides: session options over the bundle's."""
    so = session_options(manifest, threads, overrides)
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
