"""The light side stays light: the runtime, the bundle contract, the packers and the checkpoint tables import
neither torch nor onnx (the runtime wheel ships without them; `inspect` of a checkpoint needs neither)."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "onnx", "transformers", "onnxscript")
LIGHT = ["gptoss", "gptoss.errors", "gptoss.bundle", "gptoss.runtime", "gptoss.runtime.cli", "gptoss.runtime.bench",
         "gptoss.quant.mxfp4", "gptoss.quant.blockwise", "gptoss.quant.schemes", "gptoss.export",
         "gptoss.export.config", "gptoss.export.layout", "gptoss.export.checkpoint", "gptoss.export.synth"]


def heavy_modules_after_importing(module: str) -> list[str]:
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


@pytest.mark.parametrize("module", LIGHT)
def test_module_imports_nothing_heavy(module):
    assert heavy_modules_after_importing(module) == []


def test_the_probe_sees_a_heavy_import():
    """The pipeline needs onnx: if the probe above could not see that, it would prove nothing."""
    assert "onnx" in heavy_modules_after_importing("gptoss.compile.pipeline")


def test_load_model_builds_the_reference_from_a_checkpoint(tiny_hf):
    import torch

    import gptoss.export
    from gptoss.export.checkpoint import Checkpoint
    from gptoss.export.model import GptOss

    model = gptoss.export.load_model(tiny_hf)
    assert isinstance(model, GptOss) and not model.training
    assert model.config == Checkpoint.open(tiny_hf).config
    assert model(torch.tensor([1, 2, 3])).shape == (3, model.config.vocab_size)
