"""A model cut into parts (the embedding, groups of layers, the head) generates exactly what the whole graph does:
dynamic (portable) and static shapes alike, the parts chained through the hidden state, one weights file."""

import onnx
import pytest

from gptoss.bundle import load_manifest, names
from gptoss.runtime import Model
from gptoss.targets.base import Split
from helpers import make_target, static_target

PROMPT = list(range(1000, 1043))          # 43 tokens: past the window 5 times, 6 static chunks


def greedy(bundle, n=12):
    model = Model.load(bundle)
    return [e.token_id for e in model.generate(PROMPT, max_new_tokens=n, temperature=0, stop_tokens=())]


@pytest.mark.parametrize("layers_per_part", [1, 3])
def test_split_portable_graph_generates_what_the_whole_one_does(tiny_bundle, layers_per_part):
    split = tiny_bundle(make_target("portable", f"test-split-{layers_per_part}", split=Split(layers_per_part)))
    manifest = load_manifest(split)
    parts = manifest.graphs["main"].parts
    # embedding, ceil(4 layers / n) groups, head
    assert len(parts) == 2 + -(-4 // layers_per_part) and parts[0] == "model.part0.onnx"
    assert sorted(p.name for p in split.glob("*.weights")) == ["model.weights"]
    first, last = (onnx.load(str(split / p), load_external_data=False).graph for p in (parts[0], parts[-1]))
    assert [i.name for i in first.input] == [names.INPUT_IDS] and [o.name for o in first.output] == [names.HIDDEN_OUT]
    assert [o.name for o in last.output] == [names.LOGITS]
    assert greedy(split) == greedy(tiny_bundle("portable"))


def test_split_static_graphs_generate_what_the_whole_ones_do(tiny_bundle):
    whole = static_target(8, 64)
    split = tiny_bundle(make_target("portable", "test-static-split", shapes=whole.shapes, split=Split(2)))
    assert {r: len(g.parts) for r, g in load_manifest(split).graphs.items()} == {"prefill": 4, "decode": 4}
    assert greedy(split) == greedy(tiny_bundle(whole))


def test_cut_points():
    assert Split(2).cuts(4) == ["/model/embedding/output_0", "/model/layers.1/mlp/residual/output_0",
                                "/model/layers.3/mlp/residual/output_0"]
    assert Split(3, embedding_alone=False, head_alone=False).cuts(7) == [
        "/model/layers.2/mlp/residual/output_0", "/model/layers.5/mlp/residual/output_0"]
