"""The ONNX mapping of the two custom ops: one `gptoss`-domain op each, with a model-local function body
made only of standard ONNX ops, so the portable graph runs unchanged on any ONNX Runtime.

    gptoss.MoE(x [N,H], router_logits [N,E], gate_up_blocks [E,2I,H/32,16] u8, gate_up_scales [E,2I,H/32] u8,
               gate_up_bias [E,2I], down_blocks [E,H,I/32,16] u8, down_scales [E,H,I/32] u8, down_bias [E,H])
               attrs: top_k, swiglu_limit, swiglu_alpha                                    -> y [N,H]
        In x's dtype (float32 or float16): the MXFP4 decode is exact in float32, then cast.
        Sparse in the body too, in one of two forms chosen per call by an `If` on the number of (token, expert)
        pairs N*k against E: few pairs (decode) gather each token's top-k experts' packed rows and decode them
        (N*k decoded experts); many pairs (prefill) run each expert once, decoded once, over only the tokens that
        chose it (gathered by NonZero, scattered back), so the transient memory is one decoded expert, not N*k of
        them (at gpt-oss-20b, a 256-token chunk gathered per token would need ~200 GB).

    gptoss.Attention(q [B,T,heads*hd], k, v [B,T,kv*hd], past_key, past_value [B,kv,P,hd],
                     cos, sin [B,T,hd/2], sinks [heads])
                     attrs: num_heads, kv_num_heads, window                  -> out [B,T,heads*hd], present_key,
                                                                                present_value [B,kv,P+T,hd]
        Sinks in standard ops: one extra score column holding the sink logit, dropped after the softmax.
        The band mask is computed inside, relative to the cache ("concat" KV contract).

    gptoss.MaskedAttention(q, k, v, past_key, past_value [B,kv,C,hd], cos, sin, sinks, bias [1,1,T,C+T])
                     attrs: num_heads, kv_num_heads                           -> out, new_key, new_value [B,kv,T,hd]
        The same attention over a fixed-capacity cache whose visible rows the caller states with an additive
        mask; returns only the new rows ("static" KV contract, for static-shape graphs).

Both mirror `ops.attention` (the eager reference) line for line; tests hold every form to the reference model.
"""

from __future__ import annotations

import numpy as np
from onnx import FunctionProto, GraphProto, TensorProto, ValueInfoProto, helper, numpy_helper

from gptoss.ir.graph import FLOAT, GPTOSS_DOMAIN, INT, OPSET, attr_ref
from gptoss.quant.mxfp4 import FP4_VALUES


class _Body:
    """Collects the nodes of a function body; names are local to the function."""

    def __init__(self, prefix: str):
        self.nodes, self.prefix, self.count = [], prefix, 0

    def __call__(self, op_type: str, *inputs: str, outputs: int = 1, **attrs) -> str | list[str]:
        self.count += 1
        outs = [f"{self.prefix}{self.count}_{op_type}_{k}" for k in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if outputs == 1 else outs

    def const(self, value, dtype=np.int64) -> str:
        return self("Constant", value=numpy_helper.from_array(np.asarray(value, dtype=dtype)))

    def const_from_attr(self, attr: str, attr_type: int) -> str:
        """A scalar Constant whose value is the function attribute `attr`."""
        self.count += 1
        name = f"{self.prefix}{self.count}_{attr}"
        kind = "value_int" if attr_type == INT else "value_float"
        node = helper.make_node("Constant", [], [name])
        node.attribute.append(attr_ref(kind, attr_type, attr))
        self.nodes.append(node)
        return name


def _rename_output(body: _Body, value: str, output: str) -> None:
    body("Identity", value)
    body.nodes[-1].output[0] = output


# --------------------------------------------------------------------------------------------- MoE
MOE_INPUTS = ["x", "router_logits", "gate_up_blocks", "gate_up_scales", "gate_up_bias",
              "down_blocks", "down_scales", "down_bias"]


def _decode_selected(b: _Body, blocks: str, scales: str, idx: str) -> str:
    """Gather the experts `idx` names ([...] int64) and decode their MXFP4 rows (exactly, in fp32), in x's dtype:
    [..., rows, cols]."""
    sel_blocks = b("Gather", blocks, idx, axis=0)                       # [...,R,G,16] u8
    sel_scales = b("Gather", scales, idx, axis=0)                       # [...,R,G]    u8
    low = b("BitwiseAnd", sel_blocks, b.const(15, np.uint8))
    high = b("BitShift", sel_blocks, b.const(4, np.uint8), direction="RIGHT")
    last = b.const([-1])
    codes = b("Concat", b("Unsqueeze", low, last), b("Unsqueeze", high, last), axis=-1)   # [...,R,G,16,2]
    values = b("Gather", b.const(FP4_VALUES, np.float32), b("Cast", codes, to=TensorProto.INT32), axis=0)
    grouped_shape = b("Concat", b("Shape", sel_scales), b.const([32]), axis=0)
    values = b("Reshape", values, grouped_shape)                         # [...,R,G,32]
    exponent = b("Sub", b("Cast", sel_scales, to=TensorProto.FLOAT), b.const(127.0, np.float32))
    scale = b("Pow", b.const(2.0, np.float32), exponent)                 # 2^(e-127), exact
    values = b("Mul", values, b("Unsqueeze", scale, last))
    out_shape = b("Concat", b("Shape", sel_scales, end=-1), b.const([-1]), axis=0)
    return b("CastLike", b("Reshape", values, out_shape), "x")          # [...,R,G*32]


def _expert_matmul(b: _Body, weight: str, x: str, bias: str, idx: str, x_is_per_expert: bool) -> str:
    """weight [N,k,R,C] @ x ([N,C] or [N,k,C]) + bias[idx] -> [N,k,R]."""
    axes = b.const([-1]) if x_is_per_expert else b.const([1, 3])
    col = b("Unsqueeze", x, axes)                                        # [N,k,C,1] or [N,1,C,1]
    y = b("Squeeze", b("MatMul", weight, col), b.const([-1]))
    return b("Add", y, b("Gather", bias, idx, axis=0))


def _swiglu(b: _Body, h: str, limit: str, alpha: str) -> str:
    """Interleaved SwiGLU of h [..., 2I] -> [..., I]: glu.clamp(max=limit) * sigmoid(alpha * glu) * (lin.clamp + 1)."""
    step, last, big = b.const([2]), b.const([-1]), b.const([1 << 62])
    glu = b("Min", b("Slice", h, b.const([0]), big, last, step), limit)
    lin = b("Clip", b("Slice", h, b.const([1]), big, last, step), b("Neg", limit), limit)
    gate = b("Mul", glu, b("Sigmoid", b("Mul", glu, alpha)))
    return b("Mul", gate, b("Add", lin, b("CastLike", b.const(1.0, np.float32), "x")))


def _per_token_form(idx: str, weights: str, limit: str, alpha: str) -> GraphProto:
    """Each token gathers its top-k experts and decodes them: N*k decoded experts (decode, N = 1)."""
    b = _Body("moe_token_")
    w1 = _decode_selected(b, "gate_up_blocks", "gate_up_scales", idx)             # [N,k,2I,H]
    act = _swiglu(b, _expert_matmul(b, w1, "x", "gate_up_bias", idx, x_is_per_expert=False), limit, alpha)
    w2 = _decode_selected(b, "down_blocks", "down_scales", idx)                    # [N,k,H,I]
    y = _expert_matmul(b, w2, act, "down_bias", idx, x_is_per_expert=True)         # [N,k,H]
    y = b("Mul", y, b("Unsqueeze", weights, b.const([-1])))
    out = b("ReduceSum", y, b.const([1]), keepdims=0)
    return helper.make_graph(b.nodes, "per_token", [], [ValueInfoProto(name=out)])      # its type: x's


def _per_expert_form(num_experts: int, idx: str, weights: str, limit: str, alpha: str) -> GraphProto:
    """Each expert decoded once and run over only the tokens that chose it: one decoded expert at a time (prefill)."""
    b = _Body("moe_expert_")
    zero = b("CastLike", b.const(0.0, np.float32), "x")
    acc = b("CastLike", b("ConstantOfShape", b("Shape", "x")), "x")               # [N,H] zeros
    # Each expert's index as a value computed from the call's data (0 + e), not a constant: with a constant index
    # the whole decode of every expert would be constant-folded when the session loads (ORT folds Gather/unpack over
    # initializers), which stores all experts decoded: a dense copy of the MoE.
    runtime_zero = b("Sub", b("ReduceMin", idx, keepdims=1), b("ReduceMin", idx, keepdims=1))   # [1,1] int64
    runtime_zero = b("Reshape", runtime_zero, b.const([1]))
    for e in range(num_experts):
        expert = b("Add", runtime_zero, b.const([e]))
        share = b("ReduceSum", b("Where", b("Equal", idx, expert), weights, zero), b.const([1]), keepdims=0)  # [N]
        rows = b("Squeeze", b("NonZero", b("Greater", share, zero)), b.const([0]))                  # [M]
        xe = b("Gather", "x", rows, axis=0)                                                          # [M,H]
        w1 = b("Squeeze", _decode_selected(b, "gate_up_blocks", "gate_up_scales", expert), b.const([0]))  # [2I,H]
        h = b("Add", b("MatMul", xe, b("Transpose", w1, perm=[1, 0])),
              b("Squeeze", b("Gather", "gate_up_bias", expert, axis=0), b.const([0])))                # [M,2I]
        act = _swiglu(b, h, limit, alpha)                                                            # [M,I]
        w2 = b("Squeeze", _decode_selected(b, "down_blocks", "down_scales", expert), b.const([0]))  # [H,I]
        y = b("Add", b("MatMul", act, b("Transpose", w2, perm=[1, 0])),
              b("Squeeze", b("Gather", "down_bias", expert, axis=0), b.const([0])))                 # [M,H]
        y = b("Mul", y, b("Unsqueeze", b("Gather", share, rows, axis=0), b.const([-1])))
        acc = b("Add", acc, b("ScatterND", b("CastLike", b("ConstantOfShape", b("Shape", "x")), "x"),
                                b("Unsqueeze", rows, b.const([-1])), y))
    return helper.make_graph(b.nodes, "per_expert", [], [ValueInfoProto(name=acc)])     # its type: x's


def moe_function(num_experts: int) -> FunctionProto:
    """The MoE body for a model of `num_experts` experts (the per-expert form is unrolled over them)."""
    b = _Body("moe_")
    k = b("Reshape", b.const_from_attr("top_k", INT), b.const([1]))
    limit = b("CastLike", b.const_from_attr("swiglu_limit", FLOAT), "x")
    alpha = b("CastLike", b.const_from_attr("swiglu_alpha", FLOAT), "x")
    top_values, idx = b("TopK", "router_logits", k, axis=-1, largest=1, sorted=1, outputs=2)   # [N,k]
    weights = b("Softmax", top_values, axis=-1)
    pairs = b("Mul", b("Shape", "x", end=1), k)                                                  # [1]: N*k
    many = b("Greater", pairs, b("Shape", "gate_up_blocks", end=1))                              # N*k > E
    y = b("If", many, then_branch=_per_expert_form(num_experts, idx, weights, limit, alpha),
          else_branch=_per_token_form(idx, weights, limit, alpha))
    _rename_output(b, y, "y")
    return helper.make_function(GPTOSS_DOMAIN, "MoE", MOE_INPUTS, ["y"], b.nodes,
                                [helper.make_opsetid("", OPSET)], attributes=["top_k", "swiglu_limit", "swiglu_alpha"])


# --------------------------------------------------------------------------------------- Attention
ATTENTION_INPUTS = ["q", "k", "v", "past_key", "past_value", "cos", "sin", "sinks"]
ATTENTION_OUTPUTS = ["out", "present_key", "present_value"]
MASKED_ATTENTION_INPUTS = ATTENTION_INPUTS + ["bias"]
MASKED_ATTENTION_OUTPUTS = ["out", "new_key", "new_value"]


def _rotary(b: _Body, x: str, cos: str, sin: str) -> str:
    """Half-split RoPE on x [B,T,heads,hd] with cos/sin [B,T,hd/2]."""
    x1, x2 = b("Split", x, axis=-1, num_outputs=2, outputs=2)
    axis2 = b.const([2])
    c, s = b("Unsqueeze", cos, axis2), b("Unsqueeze", sin, axis2)
    o1 = b("Sub", b("Mul", x1, c), b("Mul", x2, s))
    o2 = b("Add", b("Mul", x2, c), b("Mul", x1, s))
    return b("Concat", o1, o2, axis=-1)


def _heads(b: _Body, x: str, heads: str) -> str:
    """[B,T,heads*hd] -> [B,T,heads,hd]."""
    return b("Reshape", x, b("Concat", b.const([0, 0]), heads, b.const([-1]), axis=0))


def _band_mask(b: _Body, past_len: str, total: str, window: str) -> str:
    """Additive mask [T,S]: query t (cache index past+t) sees key j iff j <= past+t and (window==0 or past+t-j < window)."""
    one = b.const(1)
    q_pos = b("Unsqueeze", b("Range", past_len, total, one), b.const([1]))      # [T,1]
    k_pos = b("Unsqueeze", b("Range", b.const(0), total, one), b.const([0]))    # [1,S]
    dist = b("Sub", q_pos, k_pos)                                               # [T,S]
    causal = b("GreaterOrEqual", dist, b.const(0))
    window64 = b("Cast", window, to=TensorProto.INT64)
    in_window = b("Or", b("Equal", window64, b.const(0)), b("Less", dist, window64))
    visible = b("And", causal, in_window)
    return b("Where", visible, b.const(0.0, np.float32), b.const(-np.inf, np.float32))   # fp32; CastLike'd by the caller


def attention_function(masked: bool = False) -> FunctionProto:
    """gptoss.Attention (band mask inside, present = past + new rows), or with `masked` gptoss.MaskedAttention
    (the mask is an input, present = the new rows only)."""
    b = _Body("mattn_" if masked else "attn_")
    heads = b("Reshape", b.const_from_attr("num_heads", INT), b.const([1]))
    kv_heads = b("Reshape", b.const_from_attr("kv_num_heads", INT), b.const([1]))
    to_bnsh = [0, 2, 1, 3]

    q = _rotary(b, _heads(b, "q", heads), "cos", "sin")                         # [B,T,H,hd]
    k = _rotary(b, _heads(b, "k", kv_heads), "cos", "sin")                      # [B,T,KV,hd]
    new_k, new_v = b("Transpose", k, perm=to_bnsh), b("Transpose", _heads(b, "v", kv_heads), perm=to_bnsh)
    keys = b("Concat", "past_key", new_k, axis=2)                                # [B,KV,S,hd]
    values = b("Concat", "past_value", new_v, axis=2)
    outputs = MASKED_ATTENTION_OUTPUTS if masked else ATTENTION_OUTPUTS
    _rename_output(b, new_k if masked else keys, outputs[1])
    _rename_output(b, new_v if masked else values, outputs[2])

    qh = b("Transpose", q, perm=to_bnsh)                                         # [B,H,T,hd]
    scores = _scores(b, qh, _repeat_kv(b, keys, heads, kv_heads))                # [B,H,T,S]
    total = b("Squeeze", b("Shape", keys, start=2, end=3), b.const([0]))
    if masked:
        scores = b("Add", scores, "bias")
    else:
        past_len = b("Squeeze", b("Shape", "past_key", start=2, end=3), b.const([0]))
        mask = _band_mask(b, past_len, total, b.const_from_attr("window", INT))
        scores = b("Add", scores, b("CastLike", mask, scores))
    probs = _softmax_with_sinks(b, scores, total)
    out = b("Transpose", b("MatMul", probs, _repeat_kv(b, values, heads, kv_heads)), perm=to_bnsh)   # [B,T,H,hd]
    _rename_output(b, b("Reshape", out, b.const([0, 0, -1])), "out")
    if masked:
        return helper.make_function(GPTOSS_DOMAIN, "MaskedAttention", MASKED_ATTENTION_INPUTS,
                                    MASKED_ATTENTION_OUTPUTS, b.nodes, [helper.make_opsetid("", OPSET)],
                                    attributes=["num_heads", "kv_num_heads"])
    return helper.make_function(GPTOSS_DOMAIN, "Attention", ATTENTION_INPUTS, ATTENTION_OUTPUTS, b.nodes,
                                [helper.make_opsetid("", OPSET)],
                                attributes=["num_heads", "kv_num_heads", "window"])


def _repeat_kv(b: _Body, x: str, heads: str, kv_heads: str) -> str:
    """Repeat each kv head for its group of query heads: [B,KV,S,hd] -> [B,H,S,hd]."""
    shape = b("Shape", x)
    expanded = b("Concat", b("Slice", shape, b.const([0]), b.const([2])), b("Div", heads, kv_heads),
                 b("Slice", shape, b.const([2]), b.const([4])), axis=0)                # [B,KV,g,S,hd]
    merged = b("Concat", b("Slice", shape, b.const([0]), b.const([1])), heads, b.const([-1]),
               b("Slice", shape, b.const([3]), b.const([4])), axis=0)                 # [B,H,S,hd]
    return b("Reshape", b("Expand", b("Unsqueeze", x, b.const([2])), expanded), merged)


def _scores(b: _Body, qh: str, keys: str) -> str:
    """q . k / sqrt(head_dim): [B,H,T,hd] x [B,H,S,hd] -> [B,H,T,S]."""
    head_dim = b("Cast", b("Shape", qh, start=3), to=TensorProto.FLOAT)
    scale = b("CastLike", b("Sqrt", head_dim), qh)
    return b("Div", b("MatMul", qh, b("Transpose", keys, perm=[0, 1, 3, 2])), scale)


def _softmax_with_sinks(b: _Body, scores: str, total: str) -> str:
    """Softmax over the keys with one extra column per head holding its sink logit, dropped afterwards."""
    sink_shape = b("Concat", b("Shape", scores, end=3), b.const([1]), axis=0)
    sink = b("Expand", b("Reshape", "sinks", b.const([1, -1, 1, 1])), sink_shape)        # [B,H,T,1]
    probs = b("Softmax", b("Concat", scores, sink, axis=-1), axis=-1)
    return b("Slice", probs, b.const([0]), b("Reshape", total, b.const([1])), b.const([-1]))
