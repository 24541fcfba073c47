"""Shared fixtures: tiny synthetic checkpoints (preset tiny, seed 0) and tiny bundles, each made once per session.

Tests are grouped by layer: contract/ (the bundle contract, the architecture), export/, quant/, targets/,
runtime/, golden/ (against OpenAI's and Hugging Face's implementations). `tiny_bundle(target, quant, logits,
source)` exports a bundle the first time it is asked for and hands the same folder to every later test: nothing
is exported twice. Tests must not modify a shared bundle (copy it, or use `bundle_variant`).
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


@pytest.fixture(scope="session")
def enc():
    """openai-harmony's gpt-oss encoding: the oracle of harmony rendering (skips where it is not installed)."""
    oh = pytest.importorskip("openai_harmony")
    return oh.load_harmony_encoding(oh.HarmonyEncodingName.HARMONY_GPT_OSS)


@pytest.fixture(scope="session")
def tok():
    """Our tokenizer (tiktoken's o200k_harmony)."""
    from gptoss.runtime.tokenizer import Tokenizer

    return Tokenizer.from_tiktoken()


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


@pytest.fixture(scope="session")
def tiny_wide_hf(tmp_path_factory) -> Path:
    """The tiny preset 128 wide (hidden and intermediate size): for kernels that take blocks of 128 only (TRT-RTX)."""
    return write_synthetic(tmp_path_factory.mktemp("ckpt") / "tiny-wide", preset("tiny").replace(
        hidden_size=128, intermediate_size=128), layout="hf", seed=0)


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory, request):
    """tiny_bundle(target="cpu", quant=None, logits=None, source="hf") -> the bundle folder, exported once.

    target: a registered target's name or a `Target` row (a test's own); source: "hf", "original" or "wide"
    (tiny_wide_hf)."""
    from gptoss.compile.pipeline import export_bundle

    made: dict = {}
    rows: dict = {}                                   # a test's own row per name: two different rows may not share one
    root = tmp_path_factory.mktemp("bundles")

    def get(target="cpu", quant=None, logits=None, source="hf") -> Path:
        name = target if isinstance(target, str) else target.name
        if not isinstance(target, str) and rows.setdefault(name, target) != target:
            raise ValueError(f"two different test targets are both named {name!r}: give each its own name")
        key = (name, tuple(sorted((quant or {}).items())), logits, source)
        if key not in made:
            ckpt = request.getfixturevalue({"hf": "tiny_hf", "original": "tiny_original", "wide": "tiny_wide_hf"}[source])
            made[key] = export_bundle(ckpt, root / f"{name}-{len(made)}", target=target, quant=quant, logits=logits)
        return made[key]

    return get
