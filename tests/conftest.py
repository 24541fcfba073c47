"""Shared fixtures: tiny synthetic checkpoints (preset tiny, seed 0), written once per session.

Golden tests across the project build on `tiny_hf`, `tiny_original` and `tiny_dense`; keep them stable.
"""

import os
from pathlib import Path

import pytest

from gptoss.export.config import preset
from gptoss.export.synth import write_synthetic

# The o200k_harmony vocabulary, pre-fetched beside the repository: tests never download.
_TIKTOKEN = Path(__file__).resolve().parents[2] / "shared" / "tiktoken"
if _TIKTOKEN.is_dir():
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(_TIKTOKEN))
    os.environ.setdefault("TIKTOKEN_RS_CACHE_DIR", str(_TIKTOKEN))


def _tiny(tmp_path_factory, layout: str) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("ckpt") / f"tiny-{layout}", preset("tiny"), layout=layout, seed=0)


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> Path:
    """A Hugging Face layout checkpoint folder (config.json, model.safetensors, MXFP4 experts)."""
    return _tiny(tmp_path_factory, "hf")


@pytest.fixture(scope="session")
def tiny_original(tmp_path_factory) -> Path:
    """A folder holding `original/` (config.json, model.safetensors, dtypes.json); same weights as tiny_hf."""
    return _tiny(tmp_path_factory, "original")


@pytest.fixture(scope="session")
def tiny_dense(tmp_path_factory) -> Path:
    """A dense Hugging Face checkpoint: tiny_hf's experts dequantized to bf16."""
    return _tiny(tmp_path_factory, "hf-dense")
