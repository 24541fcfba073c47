"""Pins the ONNX Runtime 1.32 CPU contract of GroupQueryAttention the attention lowering is built on: sinks, the
local window (counting the query itself), rotary from caches at explicit positions, the shared KV buffer.

Each test builds a one-node graph with onnx.helper, runs it on the CPU provider and compares it
with a float64 numpy reference of the gpt-oss math. docs/ort-contrib-ops.md is the write-up.
"""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


pytestmark = pytest.mark.skipif(
    not ort.__version__.startswith("1.32."), reason=f"contracts are pinned for onnxruntime 1.32, not {ort.__version__}"
)

OPSETS = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]


def _session(node, inputs, outputs, initializers=()):
    graph = helper.make_graph([node], "contract", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=OPSETS)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3  # the failing-settings tests would otherwise print ORT's error log
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


# =============================================================================================
# GroupQueryAttention
# =============================================================================================

HEADS, KV_HEADS, HEAD_DIM = 4, 2, 16
MAX_POS = 64


def rope_tables(max_pos=MAX_POS, head_dim=HEAD_DIM, base=150000.0, concentration=1.2):
    """cos/sin [max_pos, head_dim/2], already multiplied by a YaRN-style concentration factor."""
    inv_freq = base ** (-np.arange(0, head_dim, 2) / head_dim)
    angles = np.arange(max_pos)[:, None] * inv_freq[None]
    return (np.cos(angles) * concentration).astype(np.float32), (np.sin(angles) * concentration).astype(np.float32)


def apply_rope(x, positions, cos, sin):
    """Half-split RoPE: x [T, heads, D] -> [x1 cos - x2 sin, x2 cos + x1 sin]."""
    c, s = cos[positions][:, None], sin[positions][:, None]
    x1, x2 = np.split(x, 2, axis=-1)
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1)


def attention_reference(q, k, v, sinks, window):
    """gpt-oss attention for all positions. q [T, HEADS, D] k, v [T, KV_HEADS, D] (RoPE applied), sinks [HEADS]."""
    t = q.shape[0]
    group = HEADS // KV_HEADS
    pos = np.arange(t)
    visible = pos[None, :] <= pos[:, None]
    if window:
        visible &= pos[None, :] > pos[:, None] - window  # itself and the window-1 keys before it
    out = np.zeros(q.shape, np.float64)
    for h in range(HEADS):
        kh, vh = k[:, h // group].astype(np.float64), v[:, h // group].astype(np.float64)
        scores = np.where(visible, q[:, h] @ kh.T / np.sqrt(HEAD_DIM), -np.inf)
        scores = np.concatenate([scores, np.full((t, 1), sinks[h], np.float64)], axis=1)
        p = np.exp(scores - scores.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        out[:, h] = p[:, :-1] @ vh  # drop the sink column
    return out


class AttnCase:
    def __init__(self, length, seed=0):
        rng = np.random.default_rng(seed)
        self.q = rng.standard_normal((length, HEADS, HEAD_DIM)).astype(np.float32)
        self.k = rng.standard_normal((length, KV_HEADS, HEAD_DIM)).astype(np.float32)
        self.v = rng.standard_normal((length, KV_HEADS, HEAD_DIM)).astype(np.float32)
        self.sinks = rng.standard_normal(HEADS).astype(np.float32)
        self.cos, self.sin = rope_tables()
        pos = np.arange(length)
        self.q_rot = apply_rope(self.q, pos, self.cos, self.sin)
        self.k_rot = apply_rope(self.k, pos, self.cos, self.sin)

    def reference(self, window):
        return attention_reference(self.q_rot, self.k_rot, self.v, self.sinks, window)

    def step(self, a, b, rotary):
        """The q/k/v feeds [1, S, heads*D] for positions a..b-1, unrotated when the op applies RoPE."""
        q, k = (self.q, self.k) if rotary else (self.q_rot, self.k_rot)
        return {
            "query": q[a:b].reshape(1, b - a, -1),
            "key": k[a:b].reshape(1, b - a, -1),
            "value": self.v[a:b].reshape(1, b - a, -1),
            "head_sink": self.sinks,
        }


def gqa_session(case, rotary, window=None, position_ids=False, **attrs):
    """GroupQueryAttention with sinks; window is gpt-oss' W (None = full causal)."""
    inputs = ["query", "key", "value", "past_key", "past_value", "seqlens_k", "total_sequence_length"]
    inputs += ["cos_cache", "sin_cache"] if rotary else ["", ""]
    inputs += ["position_ids" if position_ids else "", "", "head_sink"]
    vis = [
        _vi("query", [1, "S", HEADS * HEAD_DIM]), _vi("key", [1, "S", KV_HEADS * HEAD_DIM]),
        _vi("value", [1, "S", KV_HEADS * HEAD_DIM]),
        _vi("past_key", [1, KV_HEADS, "P", HEAD_DIM]), _vi("past_value", [1, KV_HEADS, "P", HEAD_DIM]),
        _vi("seqlens_k", [1], TensorProto.INT32), _vi("total_sequence_length", [], TensorProto.INT32),
        _vi("head_sink", [HEADS]),
    ]
    if position_ids:
        vis.append(_vi("position_ids", [1, "S"], TensorProto.INT64))
    inits = [numpy_helper.from_array(case.cos, "cos_cache"), numpy_helper.from_array(case.sin, "sin_cache")] if rotary else []
    node = helper.make_node(
        "GroupQueryAttention", inputs, ["output", "present_key", "present_value"], domain="com.microsoft",
        name="/model/layers.0/attn/gqa", num_heads=HEADS, kv_num_heads=KV_HEADS, do_rotary=int(rotary),
        rotary_interleaved=0, local_window_size=window or -1, **attrs,
    )
    outs = [_vi("output", [1, "S", HEADS * HEAD_DIM]), _vi("present_key", None), _vi("present_value", None)]
    return _session(node, vis, outs, inits)


def _lengths(total, seen):
    """seqlens_k and total_sequence_length for a batch of one that has `total` tokens after this step."""
    return {"seqlens_k": np.array([seen - 1], np.int32), "total_sequence_length": np.array(total, np.int32)}


def _empty_past():
    z = np.zeros((1, KV_HEADS, 0, HEAD_DIM), np.float32)
    return {"past_key": z, "past_value": z}


def _heads(out):
    return out.reshape(-1, HEADS, HEAD_DIM)


@pytest.mark.parametrize("ort_window, matches", [(4, True), (3, False), (5, False)])
def test_gqa_local_window_size_counts_the_query_itself(ort_window, matches):
    """gpt-oss window W (query + W-1 keys before it) is local_window_size = W."""
    case = AttnCase(12)
    sess = gqa_session(case, rotary=False, window=ort_window)
    out = sess.run(["output"], {**case.step(0, 12, False), **_empty_past(), **_lengths(12, 12)})[0]
    assert np.allclose(_heads(out), case.reference(window=4), atol=1e-5) == matches


@pytest.mark.parametrize("rotary", [False, True])
@pytest.mark.parametrize("window", [None, 4])
def test_gqa_prefill_then_decode(rotary, window):
    case = AttnCase(12, seed=1)
    expected = case.reference(window)
    sess = gqa_session(case, rotary, window)
    prompt = 7
    out, pk, pv = sess.run(None, {**case.step(0, prompt, rotary), **_empty_past(), **_lengths(prompt, prompt)})
    np.testing.assert_allclose(_heads(out), expected[:prompt], atol=1e-5)
    # present is BNSH and holds the ROTATED keys when the op applies RoPE
    assert pk.shape == (1, KV_HEADS, prompt, HEAD_DIM)
    np.testing.assert_allclose(pk[0].transpose(1, 0, 2), case.k_rot[:prompt], atol=1e-5)
    for t in range(prompt, 12):
        out, pk, pv = sess.run(
            None, {**case.step(t, t + 1, rotary), "past_key": pk, "past_value": pv, **_lengths(t + 1, t + 1)}
        )
        np.testing.assert_allclose(_heads(out), expected[t : t + 1], atol=1e-5)
    assert pk.shape == (1, KV_HEADS, 12, HEAD_DIM)


def test_gqa_chunk_after_a_prompt():
    case = AttnCase(10, seed=2)
    sess = gqa_session(case, rotary=True, window=4)
    _, pk, pv = sess.run(None, {**case.step(0, 5, True), **_empty_past(), **_lengths(5, 5)})
    out = sess.run(["output"], {**case.step(5, 9, True), "past_key": pk, "past_value": pv, **_lengths(9, 9)})[0]
    np.testing.assert_allclose(_heads(out), case.reference(4)[5:9], atol=1e-5)


def _bnsh(x):
    return np.ascontiguousarray(x.transpose(1, 0, 2)[None])


@pytest.mark.parametrize("rotary", [False, True])
def test_gqa_trimmed_window_buffer(rotary):
    """A cache holding only the last W-1 keys works: lengths are relative to the buffer. With the
    op's RoPE, position_ids must carry the absolute position (seqlens_k no longer is one)."""
    window, length = 4, 12
    case = AttnCase(length, seed=3)
    expected = case.reference(window)
    sess = gqa_session(case, rotary, window=None, position_ids=rotary)
    for t in range(window - 1, length):
        feeds = {
            **case.step(t, t + 1, rotary),
            "past_key": _bnsh(case.k_rot[t - window + 1 : t]), "past_value": _bnsh(case.v[t - window + 1 : t]),
            **_lengths(window, window),
        }
        if rotary:
            feeds["position_ids"] = np.array([[t]], np.int64)
        out = sess.run(["output"], feeds)[0]
        np.testing.assert_allclose(_heads(out), expected[t : t + 1], atol=1e-5)


def resident_count(total, capacity, window):
    """Rows of the window cache holding positions after `total` tokens (the op's documented L(T))."""
    if total <= capacity:
        return total
    g = capacity - window + 1
    return total - g * -(-(total - capacity) // g)


@pytest.mark.parametrize("capacity", [4, 6])
def test_gqa_sliding_window_cache(capacity):
    """sliding_window_cache=1: a [B, kv, C >= W, D] buffer, absolute seqlens_k, the op evicts."""
    window, length, prompt = 4, 14, 6
    case = AttnCase(length, seed=4)
    expected = case.reference(window)
    sess = gqa_session(case, rotary=True, window=window, sliding_window_cache=1)
    zeros = np.zeros((1, KV_HEADS, capacity, HEAD_DIM), np.float32)
    out, pk, pv = sess.run(None, {**case.step(0, prompt, True), "past_key": zeros, "past_value": zeros,
                                  **_lengths(prompt, prompt)})
    np.testing.assert_allclose(_heads(out), expected[:prompt], atol=1e-5)
    for t in range(prompt, length):
        out, pk, pv = sess.run(None, {**case.step(t, t + 1, True), "past_key": pk, "past_value": pv,
                                      **_lengths(t + 1, t + 1)})
        np.testing.assert_allclose(_heads(out), expected[t : t + 1], atol=1e-5)
        assert pk.shape == (1, KV_HEADS, capacity, HEAD_DIM)
        n = resident_count(t + 1, capacity, window)  # rows [0, n) hold positions t+1-n .. t
        np.testing.assert_allclose(pk[0, :, :n].transpose(1, 0, 2), case.k_rot[t + 1 - n : t + 1], atol=1e-5)


def test_gqa_window_larger_than_capacity_is_rejected():
    case = AttnCase(4)
    sess = gqa_session(case, rotary=True, window=4, sliding_window_cache=1)
    zeros = np.zeros((1, KV_HEADS, 3, HEAD_DIM), np.float32)
    with pytest.raises(Exception, match=r"KV cache capacity \(3\) must be at least local_window_size \(4\)"):
        sess.run(None, {**case.step(0, 2, True), "past_key": zeros, "past_value": zeros, **_lengths(2, 2)})


@pytest.mark.parametrize("window", [None, 4])
def test_gqa_shared_buffer_through_io_binding(window):
    """past_key and present_key bound to the same preallocated [B, kv, max_len, D] OrtValue."""
    length, prompt, max_len = 10, 5, 16
    case = AttnCase(length, seed=5)
    expected = case.reference(window)
    sess = gqa_session(case, rotary=True, window=window)
    buffers = {n: ort.OrtValue.ortvalue_from_numpy(np.full((1, KV_HEADS, max_len, HEAD_DIM), 7.0, np.float32))
               for n in ("key", "value")}
    for a, b in [(0, prompt)] + [(t, t + 1) for t in range(prompt, length)]:
        io = sess.io_binding()
        for name, arr in {**case.step(a, b, True), **_lengths(b, b)}.items():
            io.bind_cpu_input(name, arr)
        io.bind_output("output")
        for n, buf in buffers.items():
            io.bind_ortvalue_input(f"past_{n}", buf)
            io.bind_ortvalue_output(f"present_{n}", buf)
        sess.run_with_iobinding(io)
        np.testing.assert_allclose(_heads(io.copy_outputs_to_cpu()[0]), expected[a:b], atol=1e-5)
    key = buffers["key"].numpy()
    np.testing.assert_allclose(key[0, :, :length].transpose(1, 0, 2), case.k_rot, atol=1e-5)
    assert (key[0, :, length:] == 7.0).all()  # rows past seqlens_k are left alone


def test_gqa_max_length_past_without_binding():
    """A past longer than the sequence is read as a max-length buffer: present keeps its length."""
    length, max_len = 6, 16
    case = AttnCase(length, seed=6)
    sess = gqa_session(case, rotary=True, window=4)
    past = {n: np.full((1, KV_HEADS, max_len, HEAD_DIM), 7.0, np.float32) for n in ("past_key", "past_value")}
    past["past_key"][0, :, : length - 1] = case.k_rot[: length - 1].transpose(1, 0, 2)
    past["past_value"][0, :, : length - 1] = case.v[: length - 1].transpose(1, 0, 2)
    out, pk, _ = sess.run(None, {**case.step(length - 1, length, True), **past, **_lengths(length, length)})
    np.testing.assert_allclose(_heads(out), case.reference(4)[-1:], atol=1e-5)
    assert pk.shape == (1, KV_HEADS, max_len, HEAD_DIM)


