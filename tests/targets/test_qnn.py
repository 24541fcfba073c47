"""The `qnn` target on Qualcomm's HTP, simulated on this x86 machine by onnxruntime-qnn, with CPU fallback disabled:
every node of every graph runs on the QNN execution provider, or the session does not load.

The tiny model with the qnn row's own passes and schemes but small static shapes (8-token chunks, 64 positions) and
the same split (embedding, 2 layers, 2 layers, head: 4 parts per graph, 8 graphs). A prompt of 43 tokens: six
prefill chunks, five sliding windows.

Tolerance: the HTP computes in float16 (unit roundoff 2^-11) and the attention and unembedding weights are int8
blocks (the cpu target's int8 costs ~1% relative logit error, docs/quantization.md). With exact int8 experts we ask
for top-1 agreement >= 90% and KL(reference || ours) <= 0.02 nats per position; measured 0.98 / ~0.003.
"""

import dataclasses

import numpy as np
import pytest
import torch

from gptoss.bundle import Static, load_manifest
from gptoss.runtime import Model
from gptoss.targets.base import Split
from gptoss.targets.registry import TARGETS
from helpers import kl

pytest.importorskip("onnxruntime_qnn", reason="onnxruntime-qnn (the QNN EP and its HTP simulator) is not installed")

PROMPT = list(range(1000, 1043))
QNN_TINY = dataclasses.replace(TARGETS["qnn"], name="test-qnn-tiny", shapes=Static(8, 64), split=Split(2),
                               quant={**TARGETS["qnn"].quant, "experts": "int8"})


@pytest.fixture(scope="module")
def reference(tiny_hf):
    from gptoss.export import load_model

    return load_model(tiny_hf)(torch.tensor(PROMPT)).numpy()


@pytest.fixture(scope="module")
def model(tiny_bundle):
    return Model.load(tiny_bundle(QNN_TINY))


@pytest.fixture(scope="module")
def logits(model):
    return model.logits(PROMPT)


def test_every_node_runs_on_the_npu(model, tiny_bundle):
    manifest = load_manifest(tiny_bundle(QNN_TINY))
    assert manifest.target.session_options["session.disable_cpu_ep_fallback"] == "1"
    assert model.provider == "QNNExecutionProvider" and not model.session_info.fell_back
    assert {role: len(g.parts) for role, g in manifest.graphs.items()} == {"prefill": 4, "decode": 4}


def test_logits_track_the_reference(logits, reference):
    assert logits.shape == reference.shape
    assert (logits.argmax(-1) == reference.argmax(-1)).mean() >= 0.9
    assert kl(reference, logits) <= 0.02


def test_sixteen_greedy_tokens(model):
    events = list(model.generate(PROMPT, max_new_tokens=16, temperature=0, stop_tokens=()))
    assert len(events) == 16 and all(0 <= e.token_id < model.vocab_size for e in events)


def test_the_aot_bundle_loads_compiled_contexts_and_gives_the_same_logits(tiny_hf, tmp_path, logits):
    from gptoss.compile.pipeline import export_bundle

    bundle = export_bundle(tiny_hf, tmp_path / "aot", target=QNN_TINY, aot=True)
    manifest = load_manifest(bundle)
    assert all(p.endswith("_ctx.onnx") for g in manifest.graphs.values() for p in g.parts)
    assert manifest.weights == () and not (bundle / "model.weights").exists()      # the contexts hold the weights
    assert len(list(bundle.glob("*_qnn.bin"))) == 8
    got = Model.load(bundle).logits(PROMPT)
    assert np.abs(got - logits).max() <= 1e-3 * np.abs(logits).max()
