"""Pins the ONNX Runtime 1.32 CPU contrib-op contracts of the expert and dense-weight lowerings: QMoE (fp4 and
int), MatMulNBits and GatherBlockQuantized.

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
