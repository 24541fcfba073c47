"""`gptoss-export inspect`: what a bundle or a checkpoint holds (config, ops, parts and sizes, target)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from gptoss.bundle import MANIFEST, BundleError, load_manifest


def describe(path: str | Path) -> dict:
    path = Path(path)
    if (path / MANIFEST).is_file():
        return describe_bundle(path)
    return describe_checkpoint(path)


def _graph_ops(graph_file: Path) -> tuple[Counter, list[str]]:
    import onnx

    try:
        model = onnx.load(str(graph_file), load_external_data=False)
    except Exception as e:  # a corrupt protobuf surfaces as many exception types
        raise BundleError(f"{graph_file}: cannot read the ONNX graph ({e})") from None
    ops = Counter(f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in model.graph.node)
    return ops, [f"{f.domain}.{f.name}" for f in model.functions]


def describe_bundle(path: Path) -> dict:
    m = load_manifest(path)
    graphs = {}
    for role, g in m.graphs.items():
        ops, functions = Counter(), []
        for path in m.graph_paths(role):
            part_ops, part_functions = _graph_ops(path)
            ops.update(part_ops)
            functions += [f for f in part_functions if f not in functions]
        graphs[role] = {"parts": list(g.parts), "tokens": g.tokens,
                        "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])), "functions": functions}
    kv = m.kv.to_json()
    return {
        "kind": "bundle",
        "path": str(path),
        "format_version": m.format_version,
        "target": m.target.to_json(),
        "model": _config_summary(m.model),
        "quant": m.quant,
        "parts_bytes": m.parts,
        "files_bytes": {name: f["bytes"] for name, f in m.files.items()},
        "graphs": graphs,
        "logits": m.logits,
        "shapes": m.shapes.to_json(),
        "kv_cache": {k: kv[k] for k in ("mode", "layout", "dtype", "device", "window", "keep", "capacity")},
        "tokenizer": m.tokenizer.to_json() if m.tokenizer else None,
    }


def describe_checkpoint(path: Path) -> dict:
    from gptoss.export.checkpoint import Checkpoint
    from gptoss.export.graph import part_of

    ckpt = Checkpoint.open(path)
    parts: Counter = Counter()
    for name in ckpt.canonical_names():
        src = ckpt.source(name)
        itemsize = 2 if src.dtype == "BF16" else 1
        parts[part_of(name)] += int(np.prod(src.shape)) * itemsize
    return {
        "kind": "checkpoint",
        "path": str(path),
        "layout": ckpt.layout,
        "dense_experts": ckpt.dense_experts,
        "model": _config_summary(ckpt.config.to_dict()),
        "parts_bytes": dict(parts),
        "files_bytes": {str(f.relative_to(ckpt.path) if f.is_relative_to(ckpt.path) else f): f.stat().st_size
                        for f in ckpt.files},
        "tensors": len(ckpt.canonical_names()),
        "tokenizer": str(ckpt.tokenizer_path) if ckpt.has_tokenizer else None,
    }


def _config_summary(cfg: dict) -> dict:
    keys = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_experts", "experts_per_token",
            "num_attention_heads", "num_key_value_heads", "head_dim", "sliding_window", "vocab_size")
    return {k: cfg.get(k) for k in keys}          # a bundle's manifest checks only the keys the runtime reads


def format_report(info: dict) -> str:
    """Human-readable text for `inspect`."""
    lines = [f"{info['kind']}: {info['path']}"]
    if info["kind"] == "bundle":
        t = info["target"]
        lines.append(f"target: {t['name']} ({t['execution_provider']})  format v{info['format_version']}  "
                     f"logits: {info['logits']}  shapes: {info['shapes']['kind']}  kv: {info['kv_cache']['mode']}")
        lines.append("quant: " + ", ".join(f"{k}={v}" for k, v in info["quant"].items()))
    else:
        lines.append(f"layout: {info['layout']}  tensors: {info['tensors']}  dense experts: {info['dense_experts']}")
    lines.append("model: " + ", ".join(f"{k}={v}" for k, v in info["model"].items()))
    lines.append("parts:")
    for part, n in sorted(info["parts_bytes"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {part:<12} {_size(n):>10}")
    lines.append(f"  {'total':<12} {_size(sum(info['parts_bytes'].values())):>10}")
    for role, g in info.get("graphs", {}).items():
        lines.append(f"graph {role} ({', '.join(g['parts'])}): "
                     + ", ".join(f"{op} x{n}" for op, n in g["ops"].items()))
        if g["functions"]:
            lines.append("  functions: " + ", ".join(g["functions"]))
    lines.append("files:")
    for name, n in info["files_bytes"].items():
        lines.append(f"  {name:<32} {_size(n):>10}")
    lines.append(f"tokenizer: {'yes' if info['tokenizer'] else 'none'}")
    return "\n".join(lines)


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}"
