"""`manifest.json`, the only contract between the exporter and the runtime, as code (docs/bundle-format.md).

The exporter builds a `Manifest` and writes it with `to_json`; the runtime, `inspect`, the tests and the bench
read it with `load_manifest` / `Manifest.from_json`, which validates every key once, into frozen dataclasses,
and refuses a format version it does not know. Errors name the file and the dotted key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from . import files as _files
from ._reader import Reader
from .errors import BundleError
from .integrity import check_files
from .kv import KVContract
from .shapes import Dynamic, Shapes, Static

FORMAT = "gptoss-bundle"
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
LOGITS_MODES = ("all", "last", "selectable")
"""Which positions of a call get logits: every one; the last one; or from the position given by the input
`logits_from` on ("selectable": 0 scores a sequence, T - 1 generates)."""


@dataclass(frozen=True)
class TargetSpec:
    name: str
    execution_provider: str
    provider_options: dict[str, Any] = field(default_factory=dict)
    session_options: dict[str, Any] = field(default_factory=dict)
    graph_capture: str | None = None
    """The provider option ("1") that records the one-token decode once and replays it (CUDA graphs, WebGPU), when
    the graph allows it: it then takes its attention lengths as inputs (names.SEQLENS_K, TOTAL_SEQUENCE_LENGTH)
    instead of computing them on the CPU. The runtime turns it on only when asked (Model.load(graph_capture=True))."""

    def to_json(self) -> dict:
        doc = {"name": self.name, "execution_provider": self.execution_provider,
               "provider_options": dict(self.provider_options), "session_options": dict(self.session_options)}
        if self.graph_capture is not None:
            doc["graph_capture"] = self.graph_capture
        return doc


@dataclass(frozen=True)
class GraphContract:
    """What a graph speaks, decided by the graph builder and the target's passes: its logits mode, its KV
    cache and its shapes. The manifest records exactly this."""

    logits: str
    kv: KVContract
    shapes: Shapes


@dataclass(frozen=True)
class GraphFile:
    """One graph role of the bundle: "main" (dynamic), "prefill" / "decode" (static). A model too big for one
    compiled graph (an NPU context) is split into `parts` run in order, chained through the hidden state
    (names.HIDDEN_IN / HIDDEN_OUT); most bundles have one part."""

    role: str
    parts: tuple[str, ...]    # graph files, in order
    tokens: int | None        # tokens per call (None: any)


@dataclass(frozen=True)
class TokenizerSpec:
    dir: str
    name: str
    n_vocab: int
    files: tuple[str, ...] = ()
    ranks_sha256: str = ""

    def to_json(self) -> dict:
        return {"dir": self.dir, "files": list(self.files), "name": self.name, "n_vocab": self.n_vocab,
                "ranks_sha256": self.ranks_sha256}


@dataclass(frozen=True)
class Manifest:
    model: dict[str, Any]
    target: TargetSpec
    graphs: dict[str, GraphFile]
    weights: tuple[str, ...]
    contract: GraphContract
    quant: dict[str, str]
    parts: dict[str, int]
    tokenizer: TokenizerSpec | None            # None: a bundle that speaks token ids only
    files: dict[str, dict[str, Any]]           # relative path -> {"bytes", "sha256"}
    source: dict[str, Any] = field(default_factory=dict)
    created_by: str = ""
    format_version: int = FORMAT_VERSION
    path: Path | None = None                   # where it was read from (None: not read from disk)

    # ------------------------------------------------------------------ facts
    @property
    def bundle_dir(self) -> Path:
        if self.path is None:
            raise BundleError("this manifest was not read from a bundle folder")
        return self.path.parent

    @property
    def kv(self) -> KVContract:
        return self.contract.kv

    @property
    def shapes(self) -> Shapes:
        return self.contract.shapes

    @property
    def logits(self) -> str:
        return self.contract.logits

    @property
    def num_layers(self) -> int:
        return int(self.model["num_hidden_layers"])

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

    def graph_paths(self, role: str) -> list[Path]:
        """The files of graph `role`, in the order they run."""
        return [_files.confined(self.bundle_dir, f, f"{self.path}: 'graphs.{role}.parts'")
                for f in self.graphs[role].parts]

    def tokenizer_path(self) -> Path | None:
        if self.tokenizer is None:
            return None
        return _files.confined(self.bundle_dir, self.tokenizer.dir, f"{self.path}: 'tokenizer.dir'")

    def verify_files(self) -> None:
        """Check every file the bundle uses is listed under `files`, and every listed file's size and sha256
        (bundle.integrity.check_files with verify)."""
        check_files(self, verify=True)

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": self.format_version,
            "created_by": self.created_by,
            "source": dict(self.source),
            "model": dict(self.model),
            "target": self.target.to_json(),
            "graphs": {g.role: {"parts": list(g.parts), "tokens": g.tokens} for g in self.graphs.values()},
            "weights": list(self.weights),
            "logits": self.logits,
            "kv_cache": self.kv.to_json(),
            "shapes": self.shapes.to_json(),
            "quant": dict(self.quant),
            "parts": dict(self.parts),
            "tokenizer": self.tokenizer.to_json() if self.tokenizer else None,
            "files": {k: dict(v) for k, v in self.files.items()},
        }

    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path

    @classmethod
    def from_json(cls, doc: Any, path: Path) -> "Manifest":
        """Validate a parsed manifest.json; `path` names it in errors (and locates the bundle folder)."""
        r = Reader(path)
        doc = r.obj(doc, "")
        fmt = r.get(doc, "format", str)
        if fmt != FORMAT:
            raise BundleError(f"{path}: 'format' is {fmt!r}, expected {FORMAT!r}")
        version = r.get(doc, "format_version", int)
        if version != FORMAT_VERSION:
            raise BundleError(f"{path}: 'format_version' {version} is not supported by this runtime, which reads "
                              f"format_version {FORMAT_VERSION}; re-export the bundle with this version's "
                              f"gptoss-export (or use the gptoss release that wrote it)")
        model = _model(r, doc)
        contract = _contract(r, doc, model["num_hidden_layers"])
        return cls(model=model, target=_target(r, doc), graphs=_graphs(r, doc, contract.shapes),
                   weights=tuple(r.str_list(doc, "weights")), contract=contract,
                   quant=_mapping(r, doc, "quant", str), parts=_mapping(r, doc, "parts", int),
                   tokenizer=_tokenizer(r, doc), files=_listing(r, doc),
                   source=r.get(doc, "source", dict, default={}), created_by=r.get(doc, "created_by", str, default=""),
                   format_version=version, path=path)


def _model(r: Reader, doc: dict) -> dict:
    """The model's config; the keys the runtime reads are checked here (positive ints, or null where optional)."""
    model = r.get(doc, "model", dict)
    for key in ("num_hidden_layers", "vocab_size", "hidden_size"):
        if r.get(model, key, int, "model") < 1:
            raise BundleError(f"{r.path}: 'model.{key}' must be >= 1, got {model[key]}")
    for key in ("max_position_embeddings", "eos_token_id"):
        if r.get(model, key, int, "model", default=None) is not None and model[key] < 0:
            raise BundleError(f"{r.path}: 'model.{key}' must be >= 0, got {model[key]}")
    return model


def _mapping(r: Reader, doc: dict, key: str, kind: type) -> dict:
    """An optional object of name -> `kind` (counts: >= 0)."""
    d = r.get(doc, key, dict, default={})
    for name in d:
        value = r.get(d, name, kind, key)
        if kind is int and value < 0:
            raise BundleError(f"{r.path}: '{key}.{name}' must be >= 0, got {value}")
    return d


KV_KEYS = tuple(f.name for f in fields(KVContract))      # kv_cache's keys are the contract's fields
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _listing(r: Reader, doc: dict) -> dict[str, dict[str, Any]]:
    """'files': relative path -> {"bytes": int >= 0, "sha256": 64 lowercase hex digits}, nothing else."""
    listing = r.get(doc, "files", dict)
    for rel, entry in listing.items():
        where = f"files.{rel}"
        _files.plain(rel, f"{r.path}: 'files'")
        r.obj(entry, where)
        if set(entry) != {"bytes", "sha256"}:
            raise BundleError(f"{r.path}: '{where}' must have exactly 'bytes' and 'sha256', has {sorted(entry)}")
        if r.get(entry, "bytes", int, where) < 0:
            raise BundleError(f"{r.path}: '{where}.bytes' must be >= 0, got {entry['bytes']}")
        if not SHA256_HEX.fullmatch(r.get(entry, "sha256", str, where)):
            raise BundleError(f"{r.path}: '{where}.sha256' must be 64 lowercase hex digits, got {entry['sha256']!r}")
    return listing


def _target(r: Reader, doc: dict) -> TargetSpec:
    t = r.get(doc, "target", dict)
    r.only(t, ("name", "execution_provider", "provider_options", "session_options", "graph_capture"), "target")
    return TargetSpec(name=r.get(t, "name", str, "target"),
                      execution_provider=r.get(t, "execution_provider", str, "target"),
                      provider_options=r.get(t, "provider_options", dict, "target", default={}),
                      session_options=r.get(t, "session_options", dict, "target", default={}),
                      graph_capture=r.get(t, "graph_capture", str, "target", default=None))


def _contract(r: Reader, doc: dict, layers: int) -> GraphContract:
    logits = r.get(doc, "logits", str)
    if logits not in LOGITS_MODES:
        raise BundleError(f"{r.path}: 'logits' is {logits!r}; known: {list(LOGITS_MODES)}")
    kv = r.get(doc, "kv_cache", dict)
    r.only(kv, KV_KEYS, "kv_cache")              # the graph's I/O names are fixed (names.py): no name templates
    w = "kv_cache"
    contract = KVContract(
        mode=r.get(kv, "mode", str, w), dtype=r.get(kv, "dtype", str, w), layout=r.get(kv, "layout", str, w),
        device=r.get(kv, "device", str, w, default="host"), num_kv_heads=r.get(kv, "num_kv_heads", int, w),
        head_dim=r.get(kv, "head_dim", int, w), window=tuple(r.int_list(kv, "window", w)),
        keep=tuple(r.int_list(kv, "keep", w, nullable=True)),
        capacity=tuple(r.int_list(kv, "capacity", w, nullable=True)))
    contract.validate(f"{r.path}: 'kv_cache'")
    if contract.num_layers != layers:
        raise BundleError(f"{r.path}: 'kv_cache.window' has {contract.num_layers} entries for "
                          f"model.num_hidden_layers = {layers}")
    shapes = _shapes(r, doc)
    if (contract.mode == "static") != isinstance(shapes, Static):
        raise BundleError(f"{r.path}: kv_cache.mode {contract.mode!r} does not go with {shapes.kind!r} shapes "
                          f"(static shapes, and only they, use the static cache)")
    if isinstance(shapes, Static) and logits != "all":
        raise BundleError(f"{r.path}: static graphs return the logits of every position: 'logits' must be 'all'")
    return GraphContract(logits, contract, shapes)


def _shapes(r: Reader, doc: dict) -> Shapes:
    s = r.get(doc, "shapes", dict)
    r.only(s, ("kind", "chunk", "context"), "shapes")
    kind = r.get(s, "kind", str, "shapes")
    if kind == "dynamic":
        return Dynamic()
    if kind == "static":
        try:
            return Static(r.get(s, "chunk", int, "shapes"), r.get(s, "context", int, "shapes"))
        except BundleError as e:
            raise BundleError(f"{r.path}: 'shapes': {e}") from None
    raise BundleError(f"{r.path}: 'shapes.kind' is {kind!r}; known: ['dynamic', 'static']")


def _graphs(r: Reader, doc: dict, shapes: Shapes) -> dict[str, GraphFile]:
    g = r.get(doc, "graphs", dict)
    out = {}
    for role, tokens in shapes.graph_tokens().items():
        entry = r.get(g, role, dict, "graphs")
        r.only(entry, ("parts", "tokens"), f"graphs.{role}")
        got = r.get(entry, "tokens", int, f"graphs.{role}", default=None)
        if got != tokens:
            raise BundleError(f"{r.path}: 'graphs.{role}.tokens' is {got}; {shapes.kind} shapes need {tokens}")
        parts = r.str_list(entry, "parts", f"graphs.{role}")
        if not parts:
            raise BundleError(f"{r.path}: 'graphs.{role}.parts' is empty")
        out[role] = GraphFile(role, tuple(parts), tokens)
    extra = sorted(set(g) - set(out))
    if extra:
        raise BundleError(f"{r.path}: 'graphs' has {extra}, which {shapes.kind} shapes do not use")
    return out


def _tokenizer(r: Reader, doc: dict) -> TokenizerSpec | None:
    tok = doc.get("tokenizer")
    if tok is None:
        return None
    tok = r.obj(tok, "tokenizer")
    r.only(tok, ("dir", "files", "name", "n_vocab", "ranks_sha256"), "tokenizer")
    return TokenizerSpec(dir=r.get(tok, "dir", str, "tokenizer"), name=r.get(tok, "name", str, "tokenizer"),
                         n_vocab=r.get(tok, "n_vocab", int, "tokenizer"),
                         files=tuple(r.str_list(tok, "files", "tokenizer", default=[])),
                         ranks_sha256=r.get(tok, "ranks_sha256", str, "tokenizer", default=""))


def load_manifest(bundle_dir: str | Path) -> Manifest:
    """Parse and validate `bundle_dir/manifest.json`; check the graph files and tokenizer folder it names exist."""
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: not a bundle folder (it does not exist or is not a folder)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing; is {bundle_dir} a bundle written by gptoss-export?") from None
    except ValueError as e:         # JSONDecodeError, UnicodeDecodeError, an integer past 4300 digits
        raise BundleError(f"{path}: not valid JSON ({e})") from None
    manifest = Manifest.from_json(doc, path)
    named = [p for role in manifest.graphs for p in manifest.graph_paths(role)] + [
        _files.confined(bundle_dir, w, f"{path}: 'weights'") for w in manifest.weights]
    tok = manifest.tokenizer_path()
    for p in named + ([tok] if tok is not None else []):
        if not p.exists():
            raise BundleError(f"{p}: missing (named by {path})")
    return manifest
