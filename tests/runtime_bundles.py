"""Tiny bundles for the runtime tests, exported once per session from conftest's `tiny_hf`.

`fp32` bundles keep attention, embedding and unembedding in fp32 (experts stay MXFP4, as in the
checkpoint), so their logits match the PyTorch reference to float rounding and greedy decoding must
agree token for token.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

FP32 = {"attention": "fp32", "embedding": "fp32", "unembedding": "fp32"}


def export_tiny(tiny_hf: Path, out: Path, logits: str = "selectable", quant: dict | None = None) -> Path:
    from gptoss.export.bundle import export_bundle

    return Path(export_bundle(tiny_hf, out, target="cpu", quant=FP32 if quant is None else quant, logits=logits))


def bundle_variant(src: Path, dst: Path, edit) -> Path:
    """A copy of bundle `src` at `dst` (files symlinked) whose manifest.json went through `edit(dict)`."""
    dst.mkdir(parents=True)
    for entry in src.iterdir():
        if entry.name != "manifest.json":
            os.symlink(entry.resolve(), dst / entry.name)
    doc = json.loads((src / "manifest.json").read_text())
    edit(doc)
    (dst / "manifest.json").write_text(json.dumps(doc))
    return dst


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
