"""Pins the ONNX Runtime 1.32 CPU contrib-op contracts the CPU lowering is built on.

Each test builds a one-node graph with onnx.helper, runs it on the CPU provider and compares it
with a float64 numpy reference of the gpt-oss math. docs/ort-contrib-ops.md is the write-up; if a
test here fails after an onnxruntime upgrade, the recipe in that document is what changed.
"""

from __future__ import annotations

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from gptoss.quant import blockwise as bw  # noqa: E402
from gptoss.quant.mxfp4 import (  # noqa: E402
    decode_mxfp4,
    encode_mxfp4,
    pack_qmoe_fp4,
    requantize_mxfp4_to_int8,
)

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


def _e8m0(name, scales):
    """uint8 E8M0 bytes as a FLOAT8E8M0 initializer (numpy has no such dtype; the bytes are identical)."""
    return helper.make_tensor(name, TensorProto.FLOAT8E8M0, scales.shape, scales.tobytes(), raw=True)


# =============================================================================================
# QMoE
# =============================================================================================

def moe_reference(x, logits, w1, b1, w2, b2, k, limit=7.0, renormalize=True):
    """gpt-oss MoE in float64. x [T, H], logits [T, E], w1 [E, 2I, H] (rows gate/linear interleaved), w2 [E, H, I]."""
    out = np.zeros(x.shape, np.float64)
    for t in range(x.shape[0]):
        top = np.argsort(-logits[t], kind="stable")[:k]
        if renormalize:  # softmax over the k selected logits
            z = np.exp(logits[t, top] - logits[t, top].max())
        else:  # softmax over all experts, then keep the k selected probabilities
            z = np.exp(logits[t] - logits[t].max())[top] / np.exp(logits[t] - logits[t].max()).sum()
        weights = z / z.sum() if renormalize else z
        for wt, e in zip(weights, top):
            h = w1[e].astype(np.float64) @ x[t] + b1[e]
            glu = np.minimum(h[0::2], limit)
            lin = np.clip(h[1::2], -limit, limit)
            act = glu / (1 + np.exp(-1.702 * glu)) * (lin + 1)
            out[t] += wt * (w2[e].astype(np.float64) @ act + b2[e])
    return out


class MoECase:
    """Random MXFP4 experts (exactly representable), biases, tokens and router logits."""

    def __init__(self, tokens, experts, k, hidden, inter, seed=0, weight_std=1.0):
        rng = np.random.default_rng(seed)
        self.k, self.hidden, self.experts = k, hidden, experts
        self.blocks1, self.scales1 = encode_mxfp4(rng.standard_normal((experts, 2 * inter, hidden)) * weight_std)
        self.blocks2, self.scales2 = encode_mxfp4(rng.standard_normal((experts, hidden, inter)) * weight_std)
        self.w1 = decode_mxfp4(self.blocks1, self.scales1)
        self.w2 = decode_mxfp4(self.blocks2, self.scales2)
        self.b1 = (rng.standard_normal((experts, 2 * inter)) * 0.5).astype(np.float32)
        self.b2 = (rng.standard_normal((experts, hidden)) * 0.5).astype(np.float32)
        self.x = rng.standard_normal((tokens, hidden)).astype(np.float32)
        self.logits = (rng.standard_normal((tokens, experts)) * 2).astype(np.float32)

    def reference(self, **kw):
        return moe_reference(self.x, self.logits, self.w1, self.b1, self.w2, self.b2, self.k, **kw)


SWIGLU_ATTRS = dict(
    activation_type="swiglu", swiglu_fusion=1, swiglu_limit=7.0, activation_alpha=1.702, activation_beta=1.0,
    normalize_routing_weights=1,
)


def qmoe_fp4_session(case, x_shape=None, drop=(), scales_as=None, **overrides):
    """The pinned MXFP4 recipe; `drop` removes attributes, `overrides` replaces them."""
    e = case.experts
    w1, s1 = pack_qmoe_fp4(case.blocks1, case.scales1)
    w2, s2 = pack_qmoe_fp4(case.blocks2, case.scales2)
    make_scale = scales_as or _e8m0
    ones = np.ones(e, np.float32)
    inits = [
        numpy_helper.from_array(w1, "fc1_w"), make_scale("fc1_s", s1), numpy_helper.from_array(case.b1, "fc1_b"),
        numpy_helper.from_array(w2, "fc2_w"), make_scale("fc2_s", s2), numpy_helper.from_array(case.b2, "fc2_b"),
        numpy_helper.from_array(ones, "fc1_g"), numpy_helper.from_array(ones, "fc2_g"),
    ]
    # input, router_probs, fc1 w/s/b, fc2 w/s/b, fc3 w/s/b, fc1/fc2/fc3 zero points, router_weights, fc1/fc2 global scale
    inputs = ["x", "logits", "fc1_w", "fc1_s", "fc1_b", "fc2_w", "fc2_s", "fc2_b"] + [""] * 7 + ["fc1_g", "fc2_g"]
    attrs = dict(k=case.k, quant_type="fp4", weights_prepacked=1, expert_weight_bits=4, block_size=32, **SWIGLU_ATTRS)
    attrs.update(overrides)
    for name in drop:
        attrs.pop(name)
    node = helper.make_node("QMoE", inputs, ["y"], domain="com.microsoft", name="/model/layers.0/moe", **attrs)
    shape = list(x_shape or case.x.shape)
    return _session(
        node, [_vi("x", shape), _vi("logits", [case.x.shape[0], e])], [_vi("y", shape)], inits
    )


def _run_moe(sess, case, x_shape=None):
    x = case.x.reshape(x_shape) if x_shape else case.x
    return sess.run(None, {"x": x, "logits": case.logits})[0].reshape(case.x.shape)


def _assert_close(actual, expected, rtol=1e-5, atol=1e-4):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize(
    "tokens, experts, k, hidden, inter",
    [(1, 4, 2, 64, 64), (1, 8, 4, 128, 128), (5, 8, 3, 128, 64), (7, 6, 2, 64, 128)],
)
def test_qmoe_fp4_reproduces_gpt_oss_moe(tokens, experts, k, hidden, inter):
    case = MoECase(tokens, experts, k, hidden, inter, seed=tokens * 100 + experts)
    expected = case.reference()
    # The data must exercise the clamps, or swiglu_limit would go unchecked.
    assert np.abs(case.reference(limit=np.inf) - expected).max() > 1.0
    _assert_close(_run_moe(qmoe_fp4_session(case), case), expected)


def test_qmoe_fp4_accepts_batch_by_sequence_input():
    case = MoECase(6, 4, 2, 64, 64, seed=3)
    out = _run_moe(qmoe_fp4_session(case, x_shape=(2, 3, 64)), case, x_shape=(2, 3, 64))
    _assert_close(out, case.reference())


@pytest.mark.parametrize(
    "drop", ["swiglu_limit", "activation_alpha", "activation_beta", "normalize_routing_weights", "k"]
)
def test_qmoe_fp4_every_swiglu_attribute_is_needed(drop):
    """Leaving any attribute at its default gives wrong numbers, not an error."""
    case = MoECase(3, 4, 2, 64, 64, seed=1)
    out = _run_moe(qmoe_fp4_session(case, drop=(drop,)), case)
    assert np.abs(out - case.reference()).max() > 1e-2


def test_qmoe_normalize_routing_weights_0_is_softmax_over_all_experts():
    case = MoECase(3, 8, 2, 64, 64, seed=2)
    out = _run_moe(qmoe_fp4_session(case, normalize_routing_weights=0), case)
    _assert_close(out, case.reference(renormalize=False))


def _uint8_scales(name, scales):
    return numpy_helper.from_array(scales, name)


def _float_scales(name, scales):
    return numpy_helper.from_array(np.ldexp(np.float32(1), scales.astype(np.int32) - 127), name)


@pytest.mark.parametrize(
    "setting, message",
    [
        (dict(weights_prepacked=0), "Tensor type mismatch"),
        (dict(drop=("weights_prepacked",)), "Tensor type mismatch"),  # default -1
        (dict(swiglu_fusion=2), "CPU QMoE only supports interleaved SwiGLU format"),
        (dict(block_size=64), "Shared CPU MXFP4 QMoE requires expert_weight_bits=4 and block_size=32"),
        (dict(activation_type="silu"), "Shared CPU QMoE requires interleaved SwiGLU"),
        (dict(scales_as=_uint8_scales), r"Type 'tensor\(uint8\)' of input parameter \(fc1_s\)"),
        (dict(scales_as=_float_scales), "Shared MXFP4 QMoE requires float8e8m0 block scales"),
    ],
)
def test_qmoe_fp4_other_settings_fail_loudly(setting, message):
    case = MoECase(2, 4, 2, 64, 64)
    with pytest.raises(Exception, match=message):
        _run_moe(qmoe_fp4_session(case, **setting), case)


def qmoe_int_session(case, bits, symmetric=True, accuracy_level=0):
    """Block-32 int4/int8 QMoE built from the case's MXFP4 weights; returns (session, dequantized w1, w2)."""
    q1 = bw.pack_qmoe_int(bw.quantize_blockwise(case.w1, bits, 32, symmetric))
    q2 = bw.pack_qmoe_int(bw.quantize_blockwise(case.w2, bits, 32, symmetric))
    inits = [
        numpy_helper.from_array(q1.data, "fc1_w"), numpy_helper.from_array(q1.scales, "fc1_s"),
        numpy_helper.from_array(case.b1, "fc1_b"),
        numpy_helper.from_array(q2.data, "fc2_w"), numpy_helper.from_array(q2.scales, "fc2_s"),
        numpy_helper.from_array(case.b2, "fc2_b"),
    ]
    inputs = ["x", "logits", "fc1_w", "fc1_s", "fc1_b", "fc2_w", "fc2_s", "fc2_b"]
    if not symmetric:
        inits += [numpy_helper.from_array(q1.zero_points, "fc1_z"), numpy_helper.from_array(q2.zero_points, "fc2_z")]
        inputs += ["", "", "", "fc1_z", "fc2_z"]
    node = helper.make_node(
        "QMoE", inputs, ["y"], domain="com.microsoft", k=case.k, quant_type="int", expert_weight_bits=bits,
        block_size=32, weights_prepacked=0, accuracy_level=accuracy_level, **SWIGLU_ATTRS,
    )
    shape = list(case.x.shape)
    sess = _session(node, [_vi("x", shape), _vi("logits", [shape[0], case.experts])], [_vi("y", shape)], inits)
    return sess, bw.dequantize_packed(q1), bw.dequantize_packed(q2)


@pytest.mark.parametrize("symmetric", [True, False])
def test_qmoe_int4_is_exact_for_its_own_dequantized_weights(symmetric):
    case = MoECase(4, 8, 4, 128, 128, seed=7)
    sess, w1, w2 = qmoe_int_session(case, 4, symmetric)
    out = _run_moe(sess, case)
    _assert_close(out, moe_reference(case.x, case.logits, w1, case.b1, w2, case.b2, case.k))
    # ...but int4 cannot hold MXFP4 values (25 levels per block): a lossy fallback.
    assert np.abs(out - case.reference()).max() > 1e-2 * np.abs(case.reference()).max()


def test_qmoe_int8_uses_int8_activations():
    """Block-wise 8-bit QMoE on CPU quantizes activations to int8 at every accuracy_level: ~1% error."""
    case = MoECase(4, 8, 4, 128, 128, seed=8)
    sess, w1, w2 = qmoe_int_session(case, 8)
    out = _run_moe(sess, case)
    expected = moe_reference(case.x, case.logits, w1, case.b1, w2, case.b2, case.k)
    assert np.abs(out - expected).max() < 0.05 * np.abs(expected).max()


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


# =============================================================================================
# MatMulNBits and GatherBlockQuantized
# =============================================================================================

def matmul_nbits_session(packed, n, k, accuracy_level=0):
    inits = [numpy_helper.from_array(packed.data, "B"), numpy_helper.from_array(packed.scales, "scales")]
    inputs = ["A", "B", "scales"]
    if packed.zero_points is not None:
        inits.append(numpy_helper.from_array(packed.zero_points, "zero_points"))
        inputs.append("zero_points")
    node = helper.make_node(
        "MatMulNBits", inputs, ["Y"], domain="com.microsoft", K=k, N=n, bits=packed.bits,
        block_size=packed.block_size, accuracy_level=accuracy_level,
    )
    return _session(node, [_vi("A", ["T", k])], [_vi("Y", ["T", n])], inits)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("n, k, block_size", [(48, 64, 32), (40, 80, 32), (16, 2880, 128)])
def test_matmul_nbits_matches_dequantized_weights(bits, symmetric, n, k, block_size):
    rng = np.random.default_rng(bits + n)
    w = rng.standard_normal((n, k)).astype(np.float32)
    packed = bw.pack_matmul_nbits(bw.quantize_blockwise(w, bits, block_size, symmetric))
    x = rng.standard_normal((3, k)).astype(np.float32)
    y = matmul_nbits_session(packed, n, k).run(None, {"A": x})[0]
    expected = x.astype(np.float64) @ bw.dequantize_packed(packed).T.astype(np.float64)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-4 * np.sqrt(k))


def test_matmul_nbits_int8_runs_mxfp4_weights_exactly():
    """requantize_mxfp4_to_int8 + MatMulNBits bits=8 (accuracy_level 0) is the lossless dense path."""
    rng = np.random.default_rng(9)
    blocks, scales = encode_mxfp4(rng.standard_normal((24, 96)))
    packed = bw.pack_matmul_nbits(requantize_mxfp4_to_int8(blocks, scales))
    x = rng.standard_normal((2, 96)).astype(np.float32)
    y = matmul_nbits_session(packed, 24, 96).run(None, {"A": x})[0]
    np.testing.assert_allclose(y, x.astype(np.float64) @ decode_mxfp4(blocks, scales).T, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("index_type", [TensorProto.INT64, TensorProto.INT32])
def test_gather_block_quantized_matches_dequantized_table(bits, symmetric, index_type):
    rng = np.random.default_rng(bits)
    table = rng.standard_normal((50, 96)).astype(np.float32)  # 3 blocks per row: odd, so int4 zero points pad
    packed = bw.pack_gather_block_quantized(bw.quantize_blockwise(table, bits, 32, symmetric))
    inits = [numpy_helper.from_array(packed.data, "data"), numpy_helper.from_array(packed.scales, "scales")]
    inputs = ["data", "ids", "scales"]
    if packed.zero_points is not None:
        inits.append(numpy_helper.from_array(packed.zero_points, "zero_points"))
        inputs.append("zero_points")
    node = helper.make_node(
        "GatherBlockQuantized", inputs, ["Y"], domain="com.microsoft", bits=bits, block_size=32,
        gather_axis=0, quantize_axis=1,
    )
    sess = _session(node, [_vi("ids", ["B", "S"], index_type)], [_vi("Y", ["B", "S", 96])], inits)
    ids = rng.integers(0, 50, (2, 5)).astype(np.int64 if index_type == TensorProto.INT64 else np.int32)
    out = sess.run(None, {"ids": ids})[0]
    np.testing.assert_array_equal(out, bw.dequantize_packed(packed)[ids])
