"""Full-attention layers: com.microsoft.GroupQueryAttention -> plain matrix products over the same shared buffer
when decoding.

ONNX Runtime's CPU GroupQueryAttention with a sink cannot take its flash path and reads a full layer's cache at a
fraction of the memory bandwidth (docs/performance.md: 29 ms a step at 32k rows, where the bytes take ~4 ms). The
same attention in plain ops, with the grouped queries of one KV head as the rows of one matrix product, runs at
GEMM speed. Per full layer (float32 cache; H query heads, KV heads, G = H / KV, head size D, buffer rows R):

    k         RotaryEmbedding (com.microsoft; the GQA node's own cos/sin caches, half-split)
    present   ScatterND(past, [b, kv, position], new rows): the runtime binds past and present to ONE buffer
              (the "shared" contract, unchanged), and ScatterND writes in place when they alias
    If T == 1 (decode), the products:
      scores  FusedMatMul(rotated q as [B, KV, T*G, D], present_key [B, KV, R, D], transB, alpha = 1/sqrt(D))
      mask    rows past each query's position (the future, and the buffer's unused rows): -inf
      softmax with the head's sink logit in the denominator: exp(s - m) / (sum exp(s - m) + exp(sink - m)),
              m = max(max s, sink)
      out     MatMul(probabilities, present_value) -> [B, T, H*D], heads in GQA's order (h = kv * G + g)
    else (a prompt chunk), GroupQueryAttention itself over the same buffer as a plain past: for T queries at once
              its fused kernel beats the products' [B, KV, T*G, R] passes; its copy of the cache is discarded.

The products read every row of the buffer, used or not: the runtime's host caches grow towards their capacity as
the sequence does (runtime/kv/shared.py). Sliding layers keep GroupQueryAttention and its window cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, helper

from gptoss.bundle.manifest import GraphContract
from gptoss.ir.graph import MS_DOMAIN, Graph, node_attributes

from ..base import LoweringContext


class _Emitter:
    """Nodes named under one prefix, collected in order (they replace one node in place)."""

    def __init__(self, graph: Graph, prefix: str):
        self.graph, self.prefix, self.nodes = graph, prefix, []

    def __call__(self, op: str, inputs: list[str], tag: str, domain: str = "", **attrs) -> str:
        out = f"{self.prefix}/{tag}"
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, domain=domain or None, **attrs))
        return out

    def const(self, value, dtype=np.int64) -> str:
        return self.graph.const(value, dtype)


@dataclass(frozen=True)
class FullAttentionToMatMul:
    name = "full_attention_to_matmul"

    def __call__(self, graph: Graph, contract: GraphContract, ctx: LoweringContext) -> GraphContract:
        if contract.kv.mode != "shared" or contract.kv.dtype != "float32":
            return contract                      # the int8 cache stays with GroupQueryAttention's quantized kernel
        shared: dict[str, str] = {}             # per-graph values every full layer reads (emitted with the first)
        for node in graph.nodes_of("GroupQueryAttention", MS_DOMAIN):
            attrs = node_attributes(node)
            if attrs.get("local_window_size", -1) > 0:
                continue
            graph.replace_node(node, plain_full_attention(graph, node, attrs["num_heads"], attrs["kv_num_heads"],
                                                          contract.kv.head_dim, shared))
        return contract


def plain_full_attention(graph: Graph, node, heads: int, kv_heads: int, head_dim: int,
                         shared: dict[str, str] | None = None) -> list:
    """The nodes that stand for one full layer's GroupQueryAttention `node` (its inputs and outputs); their small
    constants go into `graph` (bench/attention_micro.py builds the same nodes alone). `shared`: the cache-row
    indices and the decode test, computed from position_ids by the first full layer and read by the others."""
    emit = _Emitter(graph, f"{node.name}/matmul")
    _full_attention(emit, node, heads, kv_heads, head_dim, {} if shared is None else shared)
    return emit.nodes


def _full_attention(emit: _Emitter, node, heads: int, kv_heads: int, head_dim: int, shared: dict[str, str]) -> None:
    q, k, v, past_k, past_v, seqlens, total, cos, sin, positions, _, sinks = list(node.input)
    out, present_k, present_v = list(node.output)
    rotary = dict(domain=MS_DOMAIN, interleaved=0)
    k_rotated = emit("RotaryEmbedding", [k, positions, cos, sin], "k_rotary", num_heads=kv_heads, **rotary)
    if not shared:
        shared["index"], shared["one_step"] = _cache_rows(emit, positions, kv_heads)
    index, one_step = shared["index"], shared["one_step"]
    for name, rows, past, present in (("key", k_rotated, past_k, present_k), ("value", v, past_v, present_v)):
        split = emit("Reshape", [rows, emit.const([0, 0, kv_heads, head_dim])], f"{name}_heads")
        heads_first = emit("Transpose", [split], f"{name}_bkvtd", perm=[0, 2, 1, 3])
        emit.nodes.append(helper.make_node("ScatterND", [past, index, heads_first], [present],
                                           name=f"{emit.prefix}/write_{name}"))
    decode = _Emitter(emit.graph, f"{emit.prefix}/decode")
    q_rotated = decode("RotaryEmbedding", [q, positions, cos, sin], "q_rotary", num_heads=heads, **rotary)
    decoded = _products(decode, q_rotated, present_k, present_v, positions, sinks, heads, kv_heads, head_dim)
    prefilled = f"{emit.prefix}/prefill/out"
    prefill = helper.make_node(
        "GroupQueryAttention", [q, k, v, past_k, past_v, seqlens, total, cos, sin, positions, "", sinks],
        [prefilled, f"{emit.prefix}/prefill/scratch_key", f"{emit.prefix}/prefill/scratch_value"],
        name=f"{emit.prefix}/prefill/attention", domain=MS_DOMAIN, num_heads=heads, kv_num_heads=kv_heads,
        do_rotary=1, rotary_interleaved=0, local_window_size=-1)
    emit.nodes.append(helper.make_node("If", [one_step], [out], name=f"{emit.prefix}/decode_or_prefill",
                                       then_branch=_branch("decode", decode.nodes, decoded),
                                       else_branch=_branch("prefill", [prefill], prefilled)))


def _branch(name: str, nodes: list, output: str):
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)])


def _products(emit: _Emitter, q: str, present_k: str, present_v: str, positions: str, sinks: str,
              heads: int, kv_heads: int, head_dim: int) -> str:
    """Attention of the rotated queries `q` [B, T, H*D] over every row of the buffers, as matrix products."""
    group = heads // kv_heads
    grouped = emit("Reshape", [q, emit.const([0, 0, kv_heads, group, head_dim])], "q_groups")
    grouped = emit("Transpose", [grouped], "q_bkvtgd", perm=[0, 2, 1, 3, 4])
    grouped = emit("Reshape", [grouped, emit.const([0, 0, -1, head_dim])], "q_rows")        # [B, KV, T*G, D]
    scores = emit("FusedMatMul", [grouped, present_k], "scores", domain=MS_DOMAIN, transB=1,
                  alpha=float(1 / np.sqrt(head_dim)))                                        # [B, KV, T*G, R]
    shape4 = emit("Shape", [scores], "scores_shape")
    shape5 = emit("Concat", [emit("Slice", [shape4, emit.const([0]), emit.const([2])], "bkv"),
                             emit.const([-1, group]),
                             emit("Slice", [shape4, emit.const([3]), emit.const([4])], "r")], "shape5", axis=0)
    scores = emit("Reshape", [scores, shape5], "scores_btg")                                # [B, KV, T, G, R]
    scores = emit("Add", [scores, _future_mask(emit, positions, shape4)], "masked")
    sink = emit("Reshape", [sinks, emit.const([1, kv_heads, 1, group, 1])], "sink")
    top = emit("Max", [emit("ReduceMax", [scores, emit.const([-1])], "row_max", keepdims=1), sink], "max")
    weights = emit("Exp", [emit("Sub", [scores, top], "shifted")], "exp")
    denominator = emit("Add", [emit("ReduceSum", [weights, emit.const([-1])], "row_sum", keepdims=1),
                               emit("Exp", [emit("Sub", [sink, top], "sink_shifted")], "sink_exp")], "denominator")
    weights = emit("Reshape", [weights, shape4], "weights_rows")
    mixed = emit("MatMul", [weights, present_v], "mixed")                                    # [B, KV, T*G, D]
    mixed = emit("Reshape", [mixed, emit.const([0, 0, -1, group, head_dim])], "mixed_btg")
    mixed = emit("Div", [mixed, denominator], "normalized")
    mixed = emit("Transpose", [mixed], "mixed_btkvg", perm=[0, 2, 1, 3, 4])
    return emit("Reshape", [mixed, emit.const([0, 0, heads * head_dim])], "out")


def _cache_rows(emit: _Emitter, positions: str, kv_heads: int) -> tuple[str, str]:
    """ScatterND indices [B, KV, T, 3]: (batch, KV head, position) of every new row; and whether T == 1."""
    shape = emit("Shape", [positions], "positions_shape")                                  # [B, T]
    batch, steps = (emit("Slice", [shape, emit.const([i]), emit.const([i + 1])], f"dim{i}") for i in (0, 1))
    full = emit("Concat", [batch, emit.const([kv_heads]), steps], "index_shape", axis=0)
    b = emit("Range", [emit.const(0), emit("Squeeze", [batch], "batch"), emit.const(1)], "batch_range")
    parts = [emit("Reshape", [b, emit.const([-1, 1, 1])], "b_col"),
             emit.const(np.arange(kv_heads).reshape(1, -1, 1)),
             emit("Unsqueeze", [positions, emit.const([1])], "p_col")]
    parts = [emit("Unsqueeze", [emit("Expand", [p, full], f"expand{i}"), emit.const([-1])], f"last{i}")
             for i, p in enumerate(parts)]
    one_step = emit("Equal", [steps, emit.const([1])], "one_step")                        # [1] bool: If's cond
    return emit("Concat", parts, "scatter_index", axis=-1), one_step


def _future_mask(emit: _Emitter, positions: str, shape4: str) -> str:
    """[B, 1, T, 1, R] float: 0 where buffer row r <= the query's position, else -inf (its future and the rows no
    position has reached)."""
    rows = emit("Squeeze", [emit("Slice", [shape4, emit.const([3]), emit.const([4])], "rows_1")], "rows")
    row = emit("Range", [emit.const(0), rows, emit.const(1)], "row_range")
    query = emit("Reshape", [positions, emit.const([0, 1, -1, 1, 1])], "query_position")
    visible = emit("LessOrEqual", [row, query], "visible")
    return emit("Where", [visible, emit.const(0.0, np.float32), emit.const(-np.inf, np.float32)], "mask")

