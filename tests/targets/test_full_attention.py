"""The cpu target's full-attention layers in plain matrix products (targets/passes/full_attention.py).

Its agreement with the reference model, prefill (GroupQueryAttention) then decode (the products) past the window,
is test_export_graph's test_cpu_lowered_graph_matches_reference (the cpu-fp32 bundle); here: which layers it takes,
that the rows of the shared buffer past the sequence never reach a score, and how host caches grow.
"""

import importlib.util
from pathlib import Path

import numpy as np
import onnx

from gptoss.compile.pipeline import export_bundle
from gptoss.runtime import Model
from gptoss.runtime.kv.shared import grown
from helpers import FP32

BENCH = Path(__file__).resolve().parents[2] / "bench"


def op_counts(bundle) -> dict[str, int]:
    graph = onnx.load(str(bundle / "model.onnx"), load_external_data=False).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def test_full_layers_decode_in_matrix_products_and_sliding_layers_keep_gqa(tiny_bundle):
    graph = onnx.load(str(tiny_bundle(target="cpu") / "model.onnx"), load_external_data=False).graph
    windows = [next(onnx.helper.get_attribute_value(a) for a in n.attribute if a.name == "local_window_size")
               for n in graph.node if n.op_type == "GroupQueryAttention"]
    assert windows == [8, 8]                                   # tiny: layers 0 and 2 slide, 1 and 3 are full
    counts = op_counts(tiny_bundle(target="cpu"))
    assert counts["If"] == 2 and counts["ScatterND"] == 4 and counts["RotaryEmbedding"] == 2
    assert sum(n.name.endswith("/scatter_index") for n in graph.node) == 1      # computed once, read by both layers
    for choice in (n for n in graph.node if n.op_type == "If"):
        branches = {a.name: [m.op_type for m in a.g.node] for a in choice.attribute}
        assert "FusedMatMul" in branches["then_branch"] and "GroupQueryAttention" not in branches["then_branch"]
        assert branches["else_branch"] == ["GroupQueryAttention"]     # a prompt chunk: GQA's fused kernel


def test_the_int8_cache_keeps_gqa_on_every_layer(tiny_hf, tmp_path):
    counts = op_counts(export_bundle(tiny_hf, tmp_path / "b", target="cpu", kv_cache="int8"))
    assert counts["GroupQueryAttention"] == 4 and "If" not in counts


def test_rows_past_the_sequence_never_reach_a_score(tiny_bundle):
    """The products read every row of a full layer's buffer: rows no position has reached must be masked out
    whatever they hold (a rolled-back sequence, another slot's past)."""
    engine = Model.load(tiny_bundle(target="cpu", quant=FP32)).engine
    ids = np.random.default_rng(3).integers(1000, 5000, 21)
    clean, dirty = engine.new_cache(64), engine.new_cache(64)
    engine.prefill(clean, ids[:20])
    engine.prefill(dirty, ids[:20])
    for layer in dirty._layers:
        if layer.keep is None:
            layer.key.array[:, :, 21:] = 1e4
            layer.value.array[:, :, 21:] = -1e4
    want = engine.decode(clean, int(ids[20]), engine.logits_buffer()).copy()
    got = engine.decode(dirty, int(ids[20]), engine.logits_buffer()).copy()
    assert np.array_equal(got, want)


def test_full_layer_buffers_grow_by_a_quarter():
    assert grown(256, 257) == 320 and grown(256, 400) == 400 and grown(3, 4) == 4


def test_a_host_cache_grows_towards_its_capacity_and_ends_exactly_there(tiny_bundle):
    """A long capacity must not make short sequences read its rows: full layers start small, grow by a quarter as
    the sequence does, and stop at capacity + 1 rows."""
    engine = Model.load(tiny_bundle(target="cpu", quant=FP32)).engine
    cache = engine.new_cache(1000)
    rows = lambda: {lay.rows for lay in cache._layers if lay.keep is None}      # noqa: E731
    assert rows() == {257}
    cache.fill_random(400)
    assert rows() == {401}                                                      # what 400 positions need
    engine.prefill(cache, np.arange(1000, 1590))                                  # 990 positions: near the end
    assert rows() == {1001}                     # reserved: the prompt and a quarter more, capped at capacity + 1
    engine.decode(cache, 7, engine.logits_buffer())
    assert rows() == {1001}


def test_a_prompt_is_prefilled_over_one_buffer_size(tiny_bundle):
    """Every chunk of one prompt sees the same full-layer rows (room for the whole prompt and a quarter more,
    reserved up front), so the prompt branch's attention scores keep one size from chunk to chunk, and the first
    decode steps after it copy nothing."""
    engine = Model.load(tiny_bundle(target="cpu", quant=FP32)).engine
    cache = engine.new_cache(1000)
    seen, bind = [], cache.bind

    def watched(binding, new, layers):
        bind(binding, new, layers)
        seen.append({lay.rows for lay in cache._layers if lay.keep is None})
    cache.bind = watched
    engine.prefill(cache, np.arange(1000, 1600), chunk=64)                     # 10 chunks, 600 positions
    room = grown(601, 602)                                                     # 752: below the capacity
    assert len(seen) >= 10 and all(rows == {room} for rows in seen)
    engine.decode(cache, 7, engine.logits_buffer())
    assert seen[-1] == {room}


def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_decode_account_counts_the_branch_kernels_of_an_if_once():
    """An If's profile event spans the kernels of the branch it ran, which ORT lists as nodes of their own."""
    account = _bench_module("decode_account")
    kernel = "Node", "x_kernel_time"
    events = [{"cat": kernel[0], "name": kernel[1], "ts": ts, "dur": dur, "tid": tid, "args": {"op_name": op}}
              for ts, dur, tid, op in [(100, 50, 1, "If"), (105, 20, 1, "FusedMatMul"), (130, 15, 1, "MatMul"),
                                       (160, 10, 1, "QMoE"), (110, 30, 2, "MatMul")]]
    per_op = account.kernel_time_per_op(events, start=0)
    assert per_op == {"If": 15, "FusedMatMul": 20, "MatMul": 45, "QMoE": 10}


def test_a_decode_account_of_the_cpu_bundle_sees_the_products_inside_the_if(tiny_bundle):
    account = _bench_module("decode_account")
    profile = account.profiler_phase(tiny_bundle(target="cpu"), context=20, steps=2, threads=1, options={})
    kernels = profile["kernels_ms"]
    assert kernels["FusedMatMul"] > 0 and "GroupQueryAttention" in kernels      # decode: products on full layers
    assert kernels["If"] >= 0                      # its own time: what it spans, less its branch's kernels
    assert profile["kernel_total_ms"] <= profile["model_run_ms"]
