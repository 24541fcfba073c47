"""The NPU graph family (`qnn`, `openvino`) on the CPU provider, so its lowerings are tested where no NPU plugin is
installed: standard ONNX ops plus MatMulNBits (and QNN's SimplifiedLayerNormalization) only, the sparse MoE's two
prefill forms giving the same logits, the experts' bytes stored once for both forms, and the logits against the fp32
reference. The tiny model, static shapes of 8-token chunks and 64 positions, split like the real rows.

Tolerance: int8 experts and int8 attention/unembedding blocks on random weights cost ~1% relative logit error
(docs/quality.md: 1.1e-2 on the HTP simulator); we ask rel <= 0.03 and top-1 >= 0.9."""

import dataclasses

import numpy as np
import onnx
import pytest
import torch

from gptoss.bundle import Static, load_manifest
from gptoss.runtime import Model
from gptoss.targets.base import Split
from gptoss.targets.passes.moe_ops import MoeToSparseOps
from gptoss.targets.registry import TARGETS

PROMPT = list(range(1000, 1043))          # 43 tokens: six chunks of 8, five windows of 8
ALLOWED_OPS = {"qnn": {"com.microsoft.MatMulNBits", "com.microsoft.SimplifiedLayerNormalization"},
               "openvino": {"com.microsoft.MatMulNBits"}}


def npu_row(name: str, prefill: str, experts: str = "int8"):
    base = TARGETS[name]
    passes = tuple(MoeToSparseOps(prefill) if isinstance(p, MoeToSparseOps) else p for p in base.passes)
    return dataclasses.replace(base, name=f"test-{name}-{prefill}-{experts}", shapes=Static(8, 64), split=Split(2),
                               passes=passes, quant={**base.quant, "experts": experts})


@pytest.fixture(scope="module")
def reference(tiny_hf):
    from gptoss.export import load_model

    return load_model(tiny_hf)(torch.tensor(PROMPT)).numpy()


def cpu_logits(bundle) -> np.ndarray:
    return Model.load(bundle, provider="cpu", allow_fallback=True).logits(PROMPT)


@pytest.mark.parametrize("name", ["qnn", "openvino"])
def test_the_graphs_hold_standard_ops_and_matmulnbits_only(name, tiny_bundle):
    bundle = tiny_bundle(npu_row(name, "branches"))
    manifest = load_manifest(bundle)
    for graph in manifest.graphs.values():
        for part in graph.parts:
            model = onnx.load(str(bundle / part), load_external_data=False)
            assert not model.functions, part
            custom = {f"{n.domain}.{n.op_type}" for n in model.graph.node if n.domain not in ("", "ai.onnx")}
            assert custom <= ALLOWED_OPS[name], (part, custom - ALLOWED_OPS[name])


@pytest.mark.parametrize("name", ["qnn", "openvino"])
def test_logits_on_the_cpu_provider_track_the_reference(name, tiny_bundle, reference):
    got = cpu_logits(tiny_bundle(npu_row(name, "branches")))
    rel = np.linalg.norm(got - reference) / np.linalg.norm(reference)
    assert rel <= 0.03 and (got.argmax(-1) == reference.argmax(-1)).mean() >= 0.9, rel


def test_both_prefill_forms_of_the_moe_give_the_same_logits(tiny_bundle):
    branches = cpu_logits(tiny_bundle(npu_row("qnn", "branches")))
    gather = cpu_logits(tiny_bundle(npu_row("qnn", "gather")))
    np.testing.assert_allclose(gather, branches, rtol=0, atol=1e-4 * np.abs(branches).max())


def test_the_expert_bytes_are_stored_once_for_prefill_and_decode(tiny_bundle):
    """Prefill reads the experts through views of the initializer decode gathers from: the weights file holds the
    packed parts once (their sum), not once per graph or per form."""
    manifest = load_manifest(tiny_bundle(npu_row("qnn", "branches")))
    weights = sum((tiny_bundle(npu_row("qnn", "branches")) / w).stat().st_size for w in manifest.weights)
    packed = sum(manifest.parts.values())
    assert packed <= weights <= packed * 1.05 + 64 * 4096, (weights, manifest.parts)


def test_int4_experts_cost_what_int4_costs(tiny_bundle, reference):
    """int4 experts (the NPU default, for memory) are lossy on random weights (docs/quality.md: rel ~0.19) but not
    broken: far better than chance, worse than int8."""
    got = cpu_logits(tiny_bundle(npu_row("qnn", "branches", experts="int4")))
    rel = np.linalg.norm(got - reference) / np.linalg.norm(reference)
    assert 0.03 < rel <= 0.3 and (got.argmax(-1) == reference.argmax(-1)).mean() >= 0.5, rel
