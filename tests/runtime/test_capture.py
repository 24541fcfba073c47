"""Graph capture's bookkeeping (runtime/capture.py) on ONNX Runtime's CPU device: the code path a GPU takes, less
the recording itself (the CPU provider runs a `gpu_graph_id` call as a plain one). A capturable bundle (the `cuda`
row's graph in float32, int8 experts, so that the CPU provider runs it) decodes through one binding made once over
fixed buffers, with its inputs written in place; the logits must equal a plain session's, past the window, and
with caches taking turns (each its own graph, at most MAX_GRAPHS, released with its cache). WebGPU's real capture:
tests/targets/test_webgpu.py."""

import numpy as np
import pytest

from gptoss.runtime import Model, Placement
from gptoss.targets.registry import TARGETS
from helpers import make_target

CUDA = TARGETS["cuda"]
CUDA_FP32 = make_target("cuda", "test-cuda-capture-fp32", activations="float32", kv_dtype="float32",
                        quant={**CUDA.quant, **{p: "fp32" for p in CUDA.quant if p != "experts"}, "experts": "int8"},
                        allowed={p: (*a, "fp32") for p, a in CUDA.allowed.items()})


@pytest.fixture(scope="module")
def models(tiny_bundle):
    bundle = tiny_bundle(CUDA_FP32)
    options = dict(provider="cpu", placement=Placement("cpu"), max_context=64, provider_options={})
    return Model.load(bundle, graph_capture=True, **options), Model.load(bundle, **options)


def decode(model, cache, prompt, steps):
    rows = [model.engine.prefill(cache, prompt)]
    buffer = model.engine.logits_buffer()
    for _ in range(steps):
        rows.append(model.engine.decode(cache, int(np.argmax(rows[-1])), buffer).copy())
    return np.stack(rows)


def test_the_captured_path_decodes_what_the_plain_one_does_past_the_window(models):
    captured, plain = models
    assert captured.manifest.target.graph_capture == "enable_cuda_graph" and captured.engine.capture is not None
    got = decode(captured, captured.new_cache(), [1000, 1001, 1002], 12)          # window 8: 15 positions
    want = decode(plain, plain.new_cache(), [1000, 1001, 1002], 12)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


def test_two_caches_taking_turns_each_get_their_own_recording(models):
    captured, plain = models
    recorded = captured.engine.capture.recorded
    a, b = captured.new_cache(), captured.new_cache()
    buffer = captured.engine.logits_buffer()
    tokens = {id(a): int(np.argmax(captured.engine.prefill(a, [1000, 1001]))),
              id(b): int(np.argmax(captured.engine.prefill(b, [2000])))}
    rows = {id(a): [], id(b): []}
    for _ in range(10):                                       # a, b, a, b, ...: each replays its own graph
        for cache in (a, b):
            logits = captured.engine.decode(cache, tokens[id(cache)], buffer).copy()
            rows[id(cache)].append(logits)
            tokens[id(cache)] = int(np.argmax(logits))
    for cache, prompt in ((a, [1000, 1001]), (b, [2000])):
        want = decode(plain, plain.new_cache(), prompt, 10)[1:]
        np.testing.assert_allclose(np.stack(rows[id(cache)]), want, rtol=0, atol=1e-5)
    assert captured.engine.capture.recorded == recorded + 2  # recorded once each, not once per switch


def test_graphs_are_bounded_and_die_with_their_cache(models):
    import gc

    from gptoss.runtime.capture import MAX_GRAPHS

    captured, plain = models
    capture, buffer = captured.engine.capture, captured.engine.logits_buffer()
    caches = [captured.new_cache() for _ in range(MAX_GRAPHS + 1)]
    for cache in caches:
        captured.engine.decode(cache, int(np.argmax(captured.engine.prefill(cache, [1000]))), buffer)
    assert len(capture.steps) == MAX_GRAPHS and id(caches[0]) not in capture.steps   # the oldest was released
    recorded = capture.recorded
    got = captured.engine.decode(caches[0], 1234, buffer).copy()                    # recorded again, still right
    assert capture.recorded == recorded + 1
    want_cache = plain.new_cache()
    plain.engine.decode(want_cache, int(np.argmax(plain.engine.prefill(want_cache, [1000]))), buffer)
    np.testing.assert_allclose(got, plain.engine.decode(want_cache, 1234, buffer), rtol=0, atol=1e-5)
    del caches, cache
    gc.collect()
    assert not capture.steps                                  # every cache gone: every graph released


def test_a_cache_that_would_have_to_move_is_refused(models):
    captured, _ = models
    small = captured.engine.new_cache(4)                      # not Model.new_cache: only 5 rows on full layers
    captured.engine.prefill(small, [1000, 1001, 1002])
    buffer = captured.engine.logits_buffer()
    with pytest.raises(ValueError, match="outgrow"):
        for token in range(1000, 1010):
            captured.engine.decode(small, token, buffer)


def test_capture_needs_the_cache_on_the_device(tiny_bundle):
    with pytest.raises(ValueError, match="on the device"):
        Model.load(tiny_bundle(CUDA_FP32), provider="cpu", graph_capture=True, provider_options={})
