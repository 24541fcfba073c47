"""The static engine on a static-shape test graph (the portable graph with Static(chunk=8, context=64) shapes):
fixed-chunk prefill with padding, one-token decode, fixed-capacity caches with explicit masks and positions.

Golden: its logits equal the PyTorch reference for a prompt longer than one chunk and five windows, and greedy
decoding equals the dynamic portable bundle's, token for token, past the window.
"""

import numpy as np
import onnx
import pytest
import torch

from gptoss.bundle import BundleError, Static, load_manifest, names
from gptoss.runtime import Model
from helpers import static_target

CHUNK, CONTEXT = 8, 64


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return tiny_bundle(static_target(CHUNK, CONTEXT))


@pytest.fixture(scope="module")
def model(bundle):
    return Model.load(bundle)


@pytest.fixture(scope="module")
def prompt():
    return np.random.default_rng(3).integers(1000, 199000, 5 * CHUNK + 3).tolist()   # 43: 6 chunks, 5+ windows


def test_manifest_and_graphs_speak_the_static_contract(bundle):
    m = load_manifest(bundle)
    assert m.shapes == Static(CHUNK, CONTEXT) and m.kv.mode == "static" and m.logits == "all"
    assert {r: (g.tokens, g.parts) for r, g in m.graphs.items()} == {"prefill": (CHUNK, ("prefill.onnx",)),
                                                                     "decode": (1, ("decode.onnx",))}
    assert list(m.kv.capacity) == [w - 1 if w else CONTEXT for w in m.kv.window]
    for role, tokens in (("prefill", CHUNK), ("decode", 1)):
        (path,) = m.graph_paths(role)
        graph = onnx.load(str(path), load_external_data=False).graph
        dims = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*graph.input, *graph.output]}
        assert all(all(d > 0 for d in shape) for shape in dims.values()), dims          # every dimension fixed
        assert dims[names.INPUT_IDS] == [1, tokens] and dims[names.present_key(1)] == [1, 2, tokens, 64]
        assert dims[names.attention_bias(0)] == [1, 1, tokens, CONTEXT + tokens]
    weights = {p.name for p in bundle.iterdir() if p.suffix == ".weights"}
    assert weights == {"model.weights"}                                                # one copy, two graphs


def test_logits_match_the_reference(model, tiny_hf, prompt):
    from gptoss.export import load_model

    reference = load_model(tiny_hf)(torch.tensor(prompt)).numpy()
    got = model.logits(prompt)
    assert got.shape == reference.shape
    assert np.abs(got - reference).max() <= 1e-4


def test_greedy_generation_equals_the_dynamic_graph(model, tiny_bundle, prompt):
    dynamic = Model.load(tiny_bundle("portable"))
    ours = [e.token_id for e in model.generate(prompt, max_new_tokens=16, temperature=0, stop_tokens=())]
    theirs = [e.token_id for e in dynamic.generate(prompt, max_new_tokens=16, temperature=0, stop_tokens=())]
    assert ours == theirs


def test_prefix_reuse_after_the_rings_wrapped(model, prompt):
    cache = model.new_cache()
    first = [e.token_id for e in model.generate(prompt, max_new_tokens=6, temperature=0, stop_tokens=(), cache=cache)]
    longer = prompt + first[:3] + [1234]
    again = [e.token_id for e in model.generate(longer, max_new_tokens=5, temperature=0, stop_tokens=(), cache=cache)]
    assert cache.last_reuse == len(prompt)                # back to the checkpoint at the end of the prompt
    assert again == [e.token_id for e in model.generate(longer, max_new_tokens=5, temperature=0, stop_tokens=())]


def test_the_context_is_the_static_capacity(bundle, model, prompt):
    assert model.max_context == CONTEXT
    with pytest.raises(ValueError, match="static context"):
        Model.load(bundle, max_context=CONTEXT + 1)
    from gptoss.runtime import ContextOverflowError

    with pytest.raises(ContextOverflowError) as info:
        list(model.generate(prompt, max_new_tokens=40, temperature=0, stop_tokens=()))
    assert len(info.value.tokens) == CONTEXT - len(prompt)


def test_a_static_cache_cannot_live_on_a_device(bundle):
    from gptoss.runtime import Placement

    with pytest.raises(ValueError, match="only a shared cache"):
        Model.load(bundle, placement=Placement("cpu"))


def test_static_shapes_need_all_logits(tiny_hf, tmp_path):
    from gptoss.compile.pipeline import export_bundle
    from gptoss.export.errors import ExportError

    with pytest.raises(ExportError, match="--logits must be 'all'"):
        export_bundle(tiny_hf, tmp_path / "b", target=static_target(CHUNK, CONTEXT), logits="selectable")
    with pytest.raises(BundleError, match="chunk <= context"):
        Static(16, 8)
