"""The light side stays light: `import gptoss` (and its config/layout tables) pull in neither torch nor onnx."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "onnx", "transformers", "onnxscript")


@pytest.mark.parametrize("module", ["gptoss", "gptoss.export", "gptoss.export.config", "gptoss.export.layout",
                                    "gptoss.quant.mxfp4", "gptoss.targets"])
def test_module_imports_nothing_heavy(module):
    code = (f"import sys, {module}; "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} imported {out.stdout.strip()}"


def test_load_model_is_reachable_from_the_package():
    import gptoss.export

    assert callable(gptoss.export.load_model)
