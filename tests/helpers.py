"""Helpers the tests share (importable everywhere: pytest puts tests/ on sys.path, see pyproject.toml)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

FP32 = {"attention": "fp32", "embedding": "fp32", "unembedding": "fp32"}
"""Dense parts in fp32 (experts stay MXFP4, as in the checkpoint): logits match the reference to float rounding,
and greedy decoding agrees with the reference token for token."""


def bundle_variant(src: Path, dst: Path, edit) -> Path:
    """A copy of bundle `src` at `dst` (files hard-linked: cheap, and inside the folder, unlike symlinks) whose
    manifest.json went through `edit(dict)`."""
    shutil.copytree(src, dst, copy_function=os.link, ignore=shutil.ignore_patterns("manifest.json"))
    doc = json.loads((src / "manifest.json").read_text())
    edit(doc)
    (dst / "manifest.json").write_text(json.dumps(doc))
    return dst


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def make_target(base: str, name: str, **changes):
    """A test's own target: registered target `base`'s row under another name, with `changes` (shapes, kv_dtype,
    ...). Export it with the `tiny_bundle` fixture like any registered one."""
    import dataclasses

    from gptoss.targets.registry import get_target

    return dataclasses.replace(get_target(base), name=name, **changes)


def static_target(chunk: int = 8, context: int = 64):
    """The portable graph with static shapes: fixed chunks, fixed-capacity cache, explicit masks (kv mode "static")."""
    from gptoss.bundle import Static

    return make_target("portable", f"test-static-{chunk}-{context}", shapes=Static(chunk, context))


def rewrite_safetensors(path: Path, drop=(), put=None) -> None:
    """Rewrite a safetensors file without `drop` and with `put` (key -> array) replaced or added."""
    import numpy as np

    from gptoss.export.safetensors_io import SafetensorsFile, SafetensorsWriter

    st = SafetensorsFile(path)
    tensors = {k: np.array(st.get(k)) for k in st.keys() if k not in drop}
    tensors.update(put or {})
    tmp = path.with_suffix(".new")
    with SafetensorsWriter(tmp, [(k, v.shape, v.dtype) for k, v in tensors.items()]) as w:
        for k, v in tensors.items():
            w.write(k, v)
    tmp.replace(path)


SOURCE_OF = {"trt-rtx": "wide"}
"""Targets whose kernels need a wider checkpoint than the tiny preset (conftest.tiny_wide_hf)."""


def replace(path: Path, data: bytes) -> None:
    """Write a new file at `path`, never through a hard link into a shared bundle (bundle_variant links its files)."""
    path.unlink()
    path.write_bytes(data)


def relist(folder: Path, *names: str) -> None:
    """Record the current size and sha256 of `names` in the folder's manifest (as a bundle rewriting its own
    manifest would)."""
    doc = json.loads((folder / "manifest.json").read_text())
    for name in names:
        data = (folder / name).read_bytes()
        doc["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    replace(folder / "manifest.json", json.dumps(doc).encode())


def kl(reference, got) -> float:
    """Mean KL(reference || got) in nats per position, of two [positions, vocab] logit arrays."""
    import numpy as np

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))
    lp, lq = log_softmax(reference.astype(np.float64)), log_softmax(got.astype(np.float64))
    return float((np.exp(lp) * (lp - lq)).sum(-1).mean())
