"""The parts of a graph role, checked against the contract once at load.

A graph role ("main", "prefill", "decode") is one or more ONNX files run in order (a model split for an NPU's
context size), chained through the hidden state. Together their inputs and outputs must be exactly what the
manifest implies (bundle.names): the token ids and positions, one past/present pair per layer, logits_from for
selectable logits, one mask per window for static graphs, the attention lengths for capturable ones. Each part binds only what it declares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from gptoss.bundle import Manifest, names

from .errors import BundleError

ORT_FLOAT = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16)}
ORT_CACHE = {**ORT_FLOAT, "tensor(int8)": np.dtype(np.int8)}        # an int8 cache: quantized by the attention op


@dataclass(frozen=True)
class Part:
    session: ort.InferenceSession
    inputs: frozenset[str]
    layers: tuple[int, ...]         # the layers whose cache this part reads and writes
    first: bool
    last: bool

    def takes(self, name: str) -> bool:
        return name in self.inputs


def expected_io(manifest: Manifest) -> tuple[set[str], set[str]]:
    """(inputs, outputs) the whole of a graph role must have, the hidden-state chain aside."""
    kv = manifest.kv
    layers = [names.kv_names(i) for i in range(kv.num_layers)]
    inputs = {names.INPUT_IDS, names.POSITION_IDS} | {n for k in layers for n in k[:2]}
    if manifest.logits == "selectable":
        inputs.add(names.LOGITS_FROM)
    if kv.mode == "static":
        inputs |= {names.attention_bias(w) for w in kv.window}
    if manifest.target.graph_capture is not None:
        inputs |= {names.SEQLENS_K, names.TOTAL_SEQUENCE_LENGTH}
    return inputs, {names.LOGITS} | {n for k in layers for n in k[2:]}


def parts_of(manifest: Manifest, role: str, sessions: list[ort.InferenceSession]) -> list[Part]:
    """The role's parts, after checking them against the contract (BundleError naming the file otherwise)."""
    paths = manifest.graph_paths(role)
    where = f"{paths[0].name}{'..' + paths[-1].name if len(paths) > 1 else ''} (per {manifest.path})"
    parts, all_in, all_out = [], set(), set()
    for k, (path, session) in enumerate(zip(paths, sessions)):
        first, last = k == 0, k == len(paths) - 1
        ins, outs = {i.name for i in session.get_inputs()}, {o.name for o in session.get_outputs()}
        _check_chain(path, ins, outs, first, last)
        check_dims(manifest, role, path, session)
        layers = tuple(i for i in range(manifest.kv.num_layers) if names.past_key(i) in ins)
        parts.append(Part(session, frozenset(ins), layers, first, last))
        all_in |= ins - {names.HIDDEN_IN}
        all_out |= outs - {names.HIDDEN_OUT}
    want_in, want_out = expected_io(manifest)
    for kind, want, have in (("input", want_in, all_in), ("output", want_out, all_out)):
        missing = sorted(want - have)
        if missing:
            raise BundleError(f"{where}: graph has no {kind} {missing[0]!r}; it has {sorted(have)[:8]}...")
    extra = sorted(all_in - want_in)
    if extra:
        raise BundleError(f"{where}: graph input {extra[0]!r} is not described by the manifest")
    return parts


def _check_chain(path, ins: set[str], outs: set[str], first: bool, last: bool) -> None:
    rules = ((names.INPUT_IDS, ins, first), (names.HIDDEN_IN, ins, not first),
             (names.LOGITS, outs, last), (names.HIDDEN_OUT, outs, not last))
    for name, have, wanted in rules:
        if (name in have) != wanted:
            raise BundleError(f"{path}: a {'first' if first else 'later'}{' and last' if last else ''} part "
                              f"{'must' if wanted else 'must not'} have {name!r}")


def check_dtypes(manifest: Manifest, parts: list[Part]) -> np.dtype:
    """The cache dtype is the manifest's; returns the logits dtype."""
    inputs = {i.name: i for p in parts for i in p.session.get_inputs()}
    past_key = names.past_key(0)
    if ORT_CACHE.get(inputs[past_key].type) != np.dtype(manifest.kv.dtype):
        raise BundleError(f"{manifest.path}: {past_key} is {inputs[past_key].type} but kv_cache.dtype is "
                          f"{manifest.kv.dtype}")
    logits = next(o for o in parts[-1].session.get_outputs() if o.name == names.LOGITS).type
    if logits not in ORT_FLOAT:
        raise BundleError(f"{manifest.path}: logits output has type {logits}; expected float or float16")
    return ORT_FLOAT[logits]


def check_dims(manifest: Manifest, role: str, path, session: ort.InferenceSession) -> None:
    """The graph's fixed dimensions say what the manifest says: each cache's KV heads and head_dim (a static
    cache's rows too), the vocabulary of the logits, the hidden size between parts, a static graph's tokens per
    call. A dimension the graph leaves symbolic is not checked. BundleError naming the file, tensor and key."""
    kv, tokens = manifest.kv, manifest.graphs[role].tokens
    for arg in [*session.get_inputs(), *session.get_outputs()]:
        shape = arg.shape or []
        for axis, want, key in _expected_dims(manifest, arg.name, kv, tokens):
            if axis >= len(shape):
                raise BundleError(f"{path}: {arg.name} has {len(shape)} dimensions; the manifest's contract needs "
                                  f"at least {axis + 1}")
            got = shape[axis]
            if isinstance(got, int) and got > 0 and want is not None and got != want:
                raise BundleError(f"{path}: {arg.name} has {got} in dimension {axis}, but {manifest.path} says "
                                  f"{key} = {want}")


def _expected_dims(manifest: Manifest, name: str, kv, tokens) -> list[tuple[int, int | None, str]]:
    """(axis, expected size, the manifest key that says so) for graph input or output `name`."""
    if name == names.LOGITS:
        return [(2, manifest.vocab_size, "model.vocab_size")]
    if name in (names.HIDDEN_IN, names.HIDDEN_OUT):
        return [(2, int(manifest.model["hidden_size"]), "model.hidden_size")]
    if name in (names.INPUT_IDS, names.POSITION_IDS):
        return [(1, tokens, f"shapes ({tokens} tokens per call)")]
    for layer in range(kv.num_layers):
        past, present = names.kv_names(layer)[:2], names.kv_names(layer)[2:]
        if name in past or name in present:
            dims = [(1, kv.num_kv_heads, "kv_cache.num_kv_heads"), (3, kv.head_dim, "kv_cache.head_dim")]
            if kv.mode == "static":
                rows = kv.capacity[layer] if name in past else tokens
                dims.append((2, rows, f"kv_cache.capacity[{layer}]" if name in past else "the call's tokens"))
            return dims
    return []
