"""`gptoss-export inspect`: what a bundle or a checkpoint holds (config, ops, parts and sizes, target)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from .errors import GptOssError


def describe(path: str | Path) -> dict:
    path = Path(path)
    if (path / "manifest.json").is_file():
        return describe_bundle(path)
    return describe_checkpoint(path)


def describe_bundle(path: Path) -> dict:
    import onnx

    manifest = json.loads((path / "manifest.json").read_text())
    graph_file = path / manifest["graph"]["file"]
    try:
        model = onnx.load(str(graph_file), load_external_data=False)
    except Exception as e:  # a corrupt protobuf surfaces as many exception types
        raise GptOssError(f"{graph_file}: cannot read the ONNX graph ({e})") from None
    ops = Counter(f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in model.graph.node)
    return {
        "kind": "bundle",
        "path": str(path),
        "format_version": manifest["format_version"],
        "target": manifest["target"],
        "model": _config_summary(manifest["model"]),
        "quant": manifest["quant"],
        "parts_bytes": manifest["parts"],
        "files_bytes": {name: f["bytes"] for name, f in manifest["files"].items()},
        "ops": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "functions": [f"{f.domain}.{f.name}" for f in model.functions],
        "logits": manifest["graph"]["logits"],
        "kv_cache": {k: manifest["graph"]["kv_cache"][k] for k in ("layout", "dtype", "window", "keep")},
        "tokenizer": manifest.get("tokenizer"),
    }


def describe_checkpoint(path: Path) -> dict:
    from .checkpoint import Checkpoint
    from .graph import part_of

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
    return {k: cfg[k] for k in keys}


def format_report(info: dict) -> str:
    """Human-readable text for `inspect`."""
    lines = [f"{info['kind']}: {info['path']}"]
    if info["kind"] == "bundle":
        t = info["target"]
        lines.append(f"target: {t['name']} ({t['execution_provider']})  format v{info['format_version']}  "
                     f"logits: {info['logits']}")
        lines.append("quant: " + ", ".join(f"{k}={v}" for k, v in info["quant"].items()))
    else:
        lines.append(f"layout: {info['layout']}  tensors: {info['tensors']}  dense experts: {info['dense_experts']}")
    lines.append("model: " + ", ".join(f"{k}={v}" for k, v in info["model"].items()))
    lines.append("parts:")
    for part, n in sorted(info["parts_bytes"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {part:<12} {_size(n):>10}")
    lines.append(f"  {'total':<12} {_size(sum(info['parts_bytes'].values())):>10}")
    if info["kind"] == "bundle":
        lines.append("ops: " + ", ".join(f"{op} x{n}" for op, n in info["ops"].items()))
        if info["functions"]:
            lines.append("functions: " + ", ".join(info["functions"]))
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
