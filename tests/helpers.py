"""Helpers the tests share (importable everywhere: pytest puts tests/ on sys.path, see pyproject.toml)."""

from __future__ import annotations

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
