"""Execution providers by ONNX Runtime name or by target name; a plugin EP whose package is missing is an error
that says what to install; a built-in provider that this onnxruntime lacks likewise."""

import pytest

from gptoss.runtime import Model, ProviderError
from gptoss.runtime.providers import PROVIDERS, Provider, resolve
from helpers import FP32


@pytest.mark.parametrize("name, ep", [("cpu", "CPUExecutionProvider"), ("qnn", "QNNExecutionProvider"),
                                      ("QNNExecutionProvider", "QNNExecutionProvider"),
                                      ("trt-rtx", "NvTensorRTRTXExecutionProvider"), ("webgpu", "WebGpuExecutionProvider"),
                                      ("SomeNewExecutionProvider", "SomeNewExecutionProvider")])
def test_providers_resolve_by_either_name(name, ep):
    assert resolve(name).ep == ep


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(ProviderError, match="unknown execution provider 'tpu'; known: .*qnn"):
        resolve("tpu")


def test_a_missing_plugin_package_says_what_to_install(tiny_bundle, monkeypatch):
    import gptoss.runtime.providers as providers

    missing = Provider("MadeUpExecutionProvider", ("madeup",), "pip install 'gptoss-runtime[madeup]'",
                       plugin="gptoss_no_such_plugin_module")
    monkeypatch.setattr(providers, "PROVIDERS", (*PROVIDERS, missing))
    bundle = tiny_bundle("cpu", quant=FP32)
    with pytest.raises(ProviderError, match=r"needs the gptoss-no-such-plugin-module package.*"
                                            r"pip install 'gptoss-runtime\[madeup\]'"):
        Model.load(bundle, provider="madeup")
    assert Model.load(bundle, provider="madeup", allow_fallback=True).session_info.fell_back


def test_a_target_name_selects_its_provider(tiny_bundle):
    model = Model.load(tiny_bundle("cpu", quant=FP32), provider="cpu")
    assert model.provider == "CPUExecutionProvider" and not model.session_info.fell_back
