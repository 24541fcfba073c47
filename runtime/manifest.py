"""Read and validate a bundle's `manifest.json` (docs/bundle-format.md, format_version 1).

The manifest is the only contract between the exporter and the runtime: everything the runtime needs
to know about the graph (I/O names, cache layout, window per layer, provider) comes from here, checked
once, into frozen dataclasses. Errors name the file and the key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BundleError

FORMAT = "gptoss-bundle"
FORMAT_VERSIONS = (1,)
MANIFEST = "manifest.json"

KV_DTYPES: dict[str, np.dtype] = {"float32": np.dtype(np.float32), "float16": np.dtype(np.float16)}
LOGITS_MODES = ("all", "last", "selectable")
KV_MODES = ("concat", "shared")


@dataclass(frozen=True)
class TargetSpec:
    name: str
    execution_provider: str
    provider_options: dict[str, Any]
    session_options: dict[str, Any]


@dataclass(frozen=True)
class KVSpec:
    """The KV cache as the graph sees it: BNSH `[batch, kv_heads, positions, head_dim]` per layer."""

    past_key: str
    past_value: str
    present_key: str
    present_value: str
    dtype: np.dtype
    num_kv_heads: int
    head_dim: int
    window: tuple[int, ...]             # tokens a query sees, itself included; 0 = all
    keep: tuple[int | None, ...]        # cached positions to keep per layer; None = all
    mode: str = "concat"                # "concat": present = past + new rows; "shared": one buffer, past == present
    capacity: tuple[int | None, ...] = ()   # "shared": fixed rows of a sliding layer's buffer; None = grows

    @property
    def num_layers(self) -> int:
        return len(self.window)

    def names(self, layer: int) -> tuple[str, str, str, str]:
        """(past_key, past_value, present_key, present_value) of `layer`."""
        return tuple(t.format(layer=layer) for t in
                     (self.past_key, self.past_value, self.present_key, self.present_value))


@dataclass(frozen=True)
class GraphSpec:
    file: str
    input_ids: str
    position_ids: str
    logits: str
    logits_mode: str                    # "all": [B, T, vocab]; "last": [B, 1, vocab];
                                        # "selectable": [B, T - logits_from, vocab]
    kv: KVSpec
    shapes: str
    logits_from: str | None = None      # input name, for "selectable" logits


@dataclass(frozen=True)
class Manifest:
    path: Path
    format_version: int
    created_by: str
    model: dict[str, Any]
    target: TargetSpec
    graph: GraphSpec
    quant: dict[str, str]
    tokenizer_dir: str | None           # None: a bundle without tokenizer (token ids only)
    tokenizer_name: str
    files: dict[str, dict[str, Any]]

    @property
    def bundle_dir(self) -> Path:
        return self.path.parent

    @property
    def vocab_size(self) -> int:
        return int(self.model["vocab_size"])

    @property
    def max_position_embeddings(self) -> int:
        return int(self.model.get("max_position_embeddings", 0)) or 131072

    @property
    def eos_token_id(self) -> int | None:
        eos = self.model.get("eos_token_id")
        return int(eos) if eos is not None else None

    def verify_files(self) -> None:
        """Check every file listed under `files` exists with the recorded size and sha256."""
        for rel, info in self.files.items():
            path = self.bundle_dir / rel
            if not path.is_file():
                raise BundleError(f"{path}: missing (listed under 'files' in {self.path})")
            size = path.stat().st_size
            if "bytes" in info and int(info["bytes"]) != size:
                raise BundleError(f"{path}: {size} bytes, {self.path} says {info['bytes']}")
            if "sha256" in info:
                digest = _sha256(path)
                if digest != info["sha256"]:
                    raise BundleError(f"{path}: sha256 {digest} does not match {info['sha256']} in {self.path}")


def load_manifest(bundle_dir: str | Path) -> Manifest:
    """Parse and validate `bundle_dir/manifest.json`; check the files it names exist."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: not a bundle folder (it does not exist or is not a folder)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing; is {bundle_dir} a bundle written by gptoss-export?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not valid JSON ({e})") from None
    return parse_manifest(doc, path)


def parse_manifest(doc: Any, path: Path) -> Manifest:
    r = _Reader(path)
    doc = r.obj(doc, "")
    fmt = r.get(doc, "format", str)
    if fmt != FORMAT:
        raise BundleError(f"{path}: 'format' is {fmt!r}, expected {FORMAT!r}")
    version = r.get(doc, "format_version", int)
    if version not in FORMAT_VERSIONS:
        raise BundleError(f"{path}: 'format_version' {version} is not supported by this runtime "
                          f"(supported: {list(FORMAT_VERSIONS)}); upgrade gptoss-runtime or re-export")
    model = r.get(doc, "model", dict)
    for key in ("num_hidden_layers", "vocab_size"):
        r.get(model, key, int, "model")

    t = r.get(doc, "target", dict)
    target = TargetSpec(
        name=r.get(t, "name", str, "target"),
        execution_provider=r.get(t, "execution_provider", str, "target"),
        provider_options=r.get(t, "provider_options", dict, "target", default={}),
        session_options=r.get(t, "session_options", dict, "target", default={}),
    )

    g = r.get(doc, "graph", dict)
    inputs = r.get(g, "inputs", dict, "graph")
    outputs = r.get(g, "outputs", dict, "graph")
    logits_mode = r.get(g, "logits", str, "graph", default="all")
    if logits_mode not in LOGITS_MODES:
        raise BundleError(f"{path}: 'graph.logits' is {logits_mode!r}; known: {list(LOGITS_MODES)}")
    shapes = r.get(g, "shapes", str, "graph", default="dynamic")
    if shapes != "dynamic":
        raise BundleError(f"{path}: 'graph.shapes' is {shapes!r}; this runtime runs only 'dynamic' graphs")
    kv = _parse_kv(r, r.get(g, "kv_cache", dict, "graph"), int(model["num_hidden_layers"]))
    graph = GraphSpec(
        file=r.get(g, "file", str, "graph"),
        input_ids=r.get(inputs, "input_ids", str, "graph.inputs"),
        position_ids=r.get(inputs, "position_ids", str, "graph.inputs"),
        logits=r.get(outputs, "logits", str, "graph.outputs"),
        logits_mode=logits_mode, kv=kv, shapes=shapes,
        logits_from=(r.get(inputs, "logits_from", str, "graph.inputs") if logits_mode == "selectable" else None),
    )

    tok = doc.get("tokenizer")
    if tok is not None:
        tok = r.obj(tok, "tokenizer")
    files = r.get(doc, "files", dict, default={})
    manifest = Manifest(
        path=path, format_version=version, created_by=str(doc.get("created_by", "")), model=model,
        target=target, graph=graph, quant=dict(doc.get("quant") or {}),
        tokenizer_dir=r.get(tok, "dir", str, "tokenizer") if tok else None,
        tokenizer_name=str(tok.get("name", "")) if tok else "",
        files=files,
    )
    for rel in (graph.file, manifest.tokenizer_dir):
        if rel is not None and not (path.parent / rel).exists():
            raise BundleError(f"{path.parent / rel}: missing (named by {path})")
    return manifest


def _parse_kv(r: "_Reader", kv: dict, num_layers: int) -> KVSpec:
    where = "graph.kv_cache"
    layout = r.get(kv, "layout", str, where)
    if layout != "BNSH":
        raise BundleError(f"{r.path}: '{where}.layout' is {layout!r}; this runtime supports 'BNSH'")
    dtype_name = r.get(kv, "dtype", str, where)
    if dtype_name not in KV_DTYPES:
        raise BundleError(f"{r.path}: '{where}.dtype' is {dtype_name!r}; known: {sorted(KV_DTYPES)}")
    window = [int(w) for w in r.get(kv, "window", list, where)]
    keep = [None if k is None else int(k) for k in r.get(kv, "keep", list, where)]
    for key, values in (("window", window), ("keep", keep)):
        if len(values) != num_layers:
            raise BundleError(f"{r.path}: '{where}.{key}' has {len(values)} entries for "
                              f"model.num_hidden_layers = {num_layers}")
    for i, (w, k) in enumerate(zip(window, keep)):
        if w < 0 or (k is not None and k < 0):
            raise BundleError(f"{r.path}: '{where}' layer {i}: negative window {w} or keep {k}")
        if k is not None and (w == 0 or k < w - 1):
            raise BundleError(f"{r.path}: '{where}' layer {i}: keep {k} is too small for window {w} "
                              f"(a query sees window - 1 cached positions; window 0 needs keep null)")
    mode = r.get(kv, "mode", str, where, default="concat")
    if mode not in KV_MODES:
        raise BundleError(f"{r.path}: '{where}.mode' is {mode!r}; known: {list(KV_MODES)}")
    capacity: list = [None] * num_layers
    if mode == "shared":
        capacity = [None if c is None else int(c) for c in r.get(kv, "capacity", list, where)]
        if len(capacity) != num_layers:
            raise BundleError(f"{r.path}: '{where}.capacity' has {len(capacity)} entries for "
                              f"model.num_hidden_layers = {num_layers}")
        for i, (w, c) in enumerate(zip(window, capacity)):
            if (w > 0) != (c is not None) or (c is not None and c < w):
                raise BundleError(f"{r.path}: '{where}' layer {i}: capacity {c} does not fit window {w} "
                                  f"(sliding layers need a capacity >= window, full layers null)")
    templates = {name: r.get(kv, name, str, where)
                 for name in ("past_key", "past_value", "present_key", "present_value")}
    for name, template in templates.items():
        if "{layer}" not in template:
            raise BundleError(f"{r.path}: '{where}.{name}' ({template!r}) must contain '{{layer}}'")
    return KVSpec(**templates, dtype=KV_DTYPES[dtype_name],
                  num_kv_heads=r.get(kv, "num_kv_heads", int, where), head_dim=r.get(kv, "head_dim", int, where),
                  window=tuple(window), keep=tuple(keep), mode=mode, capacity=tuple(capacity))


class _Reader:
    """Typed access to manifest keys with errors that name the file and the dotted key."""

    _MISSING = object()

    def __init__(self, path: Path):
        self.path = path

    def obj(self, value, where: str) -> dict:
        if not isinstance(value, dict):
            raise BundleError(f"{self.path}: {'top level' if not where else repr(where)} must be a JSON object")
        return value

    def get(self, d: dict, key: str, kind: type, where: str = "", default=_MISSING):
        dotted = f"{where}.{key}" if where else key
        if key not in d:
            if default is not self._MISSING:
                return default
            raise BundleError(f"{self.path}: missing key {dotted!r}")
        value = d[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if not ok:
            raise BundleError(f"{self.path}: {dotted!r} must be {kind.__name__}, got {type(value).__name__}")
        return value


def _sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
