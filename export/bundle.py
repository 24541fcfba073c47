"""checkpoint -> bundle: the exporter's pipeline, one named stage after another.

    validate   Checkpoint.open reads every header, checks names/shapes/dtypes against config.json
    tokenizer  o200k_harmony files, offline (fails early when there is no vocabulary)
    graph      the portable graph (graph.py), weights still lazy
    lower      the target's passes, in order (targets/registry.py), then boundary checks
    write      model.onnx + model.weights, streaming one tensor at a time (writer.py)
    manifest   manifest.json with sizes and sha256 of every file (docs/bundle-format.md)

Everything is written into a temporary sibling folder and renamed into place at the end: an
interrupted or failed export leaves no half-written bundle, and an existing bundle is never
clobbered without `force`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from .. import __version__
from .checkpoint import Checkpoint
from .errors import ExportError
from .graph import LOGITS_MODES, build_portable_graph
from .onnx_builder import Graph
from .writer import write_onnx

FORMAT, FORMAT_VERSION = "gptoss-bundle", 1


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, flush=True)


def mxfp4_reader(ckpt: Checkpoint):
    """A reader of canonical tensors that serves MXFP4 experts even from dense checkpoints (re-encoded)."""
    if not ckpt.dense_experts:
        return ckpt.read
    from gptoss.quant.mxfp4 import encode_mxfp4

    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def read(name: str) -> np.ndarray:
        if name.endswith((".blocks", ".scales")):
            base = name.rsplit(".", 1)[0]
            if base not in cache:
                cache.clear()
                w = np.asarray(ckpt.read(base + ".weight"), dtype=np.float32)
                cache[base] = encode_mxfp4(w, name=base + ".weight")
            blocks, scales = cache[base]
            return blocks if name.endswith(".blocks") else scales
        return ckpt.read(name)

    return read


def _progress(paths: list[Path], enabled: bool, desc: str, total: int):
    """Yield the paths, with a byte-counting progress bar (and ETA) when enabled."""
    if not enabled:
        yield from paths
        return
    from tqdm import tqdm

    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc) as bar:
        for path in paths:
            yield path
            bar.update(path.stat().st_size)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_output(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"output {out_dir} exists and is not a folder")
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise ExportError(f"output folder {out_dir} exists and is not empty; pass --force to replace it")


def lower(graph: Graph, target, schemes: dict[str, str], cfg) -> Graph:
    from gptoss.targets.passes import PASSES, check_lowered

    for name in target.passes:
        graph = PASSES[name](graph, cfg=cfg, schemes=schemes, options=target.options)
    check_lowered(graph, target)
    return graph


def export_bundle(checkpoint_dir: str | Path, out_dir: str | Path, target: str = "cpu",
                  quant: dict[str, str] | None = None, logits: str = "selectable", force: bool = False,
                  layout: str | None = None, progress: bool = False) -> Path:
    """Export a gpt-oss checkpoint into a self-contained bundle for one target. Returns the bundle path."""
    from gptoss.targets.registry import PARTS, get_target

    out_dir = Path(out_dir)
    tgt = get_target(target)
    unknown = sorted(set(quant or {}) - set(PARTS))
    if unknown:
        raise ExportError(f"unknown part(s) {unknown} in --quant; known parts: {', '.join(PARTS)}")
    schemes = {part: tgt.scheme_for(part, quant) for part in PARTS}
    if logits not in LOGITS_MODES:
        raise ExportError(f"--logits must be one of {', '.join(LOGITS_MODES)}, got {logits!r}")
    _check_output(out_dir, force)

    t0 = time.time()
    _log(progress, f"[1/6 validate] {checkpoint_dir}")
    ckpt = Checkpoint.open(checkpoint_dir, layout=layout)
    cfg = ckpt.config

    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        _log(progress, "[2/6 tokenizer] o200k_harmony, offline")
        tokenizer = _write_tokenizer(tmp, ckpt)
        _log(progress, f"[3/6 graph] {cfg.num_hidden_layers} layers, {cfg.num_experts} experts")
        graph = build_portable_graph(cfg, mxfp4_reader(ckpt), logits=logits)
        _log(progress, f"[4/6 lower] target {tgt.name}: {', '.join(tgt.passes) or 'no passes'}")
        graph = lower(graph, tgt, schemes, cfg)
        _log(progress, "[5/6 write] weights, streamed")
        parts = _write_weights(graph, tmp, progress, after_tensor=ckpt.release_pages)
        _log(progress, "[6/6 manifest] checksums")
        manifest = _manifest(cfg, tgt, schemes, parts, tokenizer, logits, tmp, checkpoint=ckpt, progress=progress)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log(progress, f"done in {time.time() - t0:.1f} s: {out_dir}")
    return out_dir


def _write_weights(graph: Graph, folder: Path, progress: bool, after_tensor) -> dict[str, int]:
    """Stream the weights; after each tensor the checkpoint's pages are released (RSS stays flat)."""
    total = sum(t.nbytes for t in graph.initializers.values())
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="weights")

    def on_tensor(t):
        after_tensor()
        if bar:
            bar.update(t.nbytes)

    try:
        return write_onnx(graph, folder, on_tensor=on_tensor)
    finally:
        if bar:
            bar.close()


def _write_tokenizer(folder: Path, ckpt: Checkpoint) -> dict | None:
    """The bundle's own tokenizer: from the checkpoint's tokenizer.json, else tiktoken's offline cache.

    A model whose vocabulary is smaller than o200k_harmony's (a synthetic test model) gets none: its
    bundle speaks token ids only, and the manifest says so (tokenizer: null).
    """
    from .tokenizer_files import harmony_special_tokens, write_bundle_tokenizer

    if ckpt.config.vocab_size < max(harmony_special_tokens().values()) + 1:
        return None
    return write_bundle_tokenizer(folder, source=ckpt.tokenizer_path if ckpt.has_tokenizer else None)


def _replace(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _manifest(cfg, tgt, schemes, parts, tokenizer, logits, folder: Path, checkpoint: Checkpoint,
              progress: bool = False) -> dict:
    files = {}
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    for path in _progress(paths, progress, "checksums", total=sum(p.stat().st_size for p in paths)):
        rel = path.relative_to(folder).as_posix()
        files[rel] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    keep = [w - 1 if w > 0 else None for w in cfg.windows]
    kv_mode = tgt.options.get("kv_cache", "concat")
    # "shared": one buffer per layer, bound as past and present; sliding layers use a fixed buffer of
    # `capacity` rows that the attention op manages itself (>= window; 2 x window compacts once per window).
    kv_extra = {"capacity": [2 * w if w > 0 else None for w in cfg.windows]} if kv_mode == "shared" else {}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_by": f"gptoss {__version__}",
        "source": {"layout": checkpoint.layout, "dense_experts": checkpoint.dense_experts},
        "model": cfg.to_dict(),
        "target": {
            "name": tgt.name,
            "execution_provider": tgt.execution_provider,
            "provider_options": dict(tgt.provider_options),
            "session_options": dict(tgt.session_options),
        },
        "graph": {
            "file": "model.onnx",
            "weights": ["model.weights"],
            "inputs": {"input_ids": "input_ids", "position_ids": "position_ids",
                       **({"logits_from": "logits_from"} if logits == "selectable" else {})},
            "outputs": {"logits": "logits"},
            "logits": logits,
            "kv_cache": {
                "past_key": "past_key.{layer}", "past_value": "past_value.{layer}",
                "present_key": "present_key.{layer}", "present_value": "present_value.{layer}",
                "layout": "BNSH", "dtype": tgt.kv_dtype,
                "num_kv_heads": cfg.num_key_value_heads, "head_dim": cfg.head_dim,
                "window": cfg.windows, "keep": keep, "mode": kv_mode, **kv_extra,
            },
            "shapes": tgt.shapes,
        },
        "quant": schemes,
        "parts": parts,
        "tokenizer": tokenizer,
        "files": files,
    }
