"""Lowering passes: each a function (graph, cfg, schemes) -> graph over the portable graph.

    moe_to_qmoe                    gptoss.MoE        -> com.microsoft.QMoE quant_type=fp4 (exact MXFP4, prepacked)
    attention_to_gqa               gptoss.Attention  -> com.microsoft.GroupQueryAttention (sinks, window, rotary)
    dense_to_matmul_nbits          MatMul(fp32 W)    -> com.microsoft.MatMulNBits (int8 | int4 block 32)
    embedding_to_gather_quantized  Gather(fp32 table)-> com.microsoft.GatherBlockQuantized (int8 | int4) or fp16

Weights are re-packed lazily from the checkpoint (graph.source), one tensor at a time, by the pure
packers in gptoss.quant. The exact contrib-op contracts these passes rely on are pinned by
tests/test_ort_contract.py and written down in docs/ort-contrib-ops.md.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from onnx import TensorProto, helper

from gptoss.export.errors import ExportError
from gptoss.export.onnx_builder import GPTOSS_DOMAIN, MS_DOMAIN, Graph, LazyTensor
from gptoss.quant.blockwise import pack_gather_block_quantized, pack_matmul_nbits, quantize_blockwise
from gptoss.quant.mxfp4 import pack_qmoe_fp4

BLOCK = 32
ROW_CHUNK = 8192   # rows quantized at a time: bounds the exporter's memory on the 201k-row tables


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _replace_node(graph: Graph, old, new_nodes: list) -> None:
    i = graph.nodes.index(old)
    graph.nodes[i:i + 1] = new_nodes


def _canonical(initializer: str) -> str:
    return initializer.removeprefix("model.")


# ------------------------------------------------------------------------------------------- MoE
def moe_to_qmoe(graph: Graph, cfg, schemes: dict[str, str], options=None) -> Graph:
    """gptoss.MoE -> QMoE(fp4): weights K-packed [E, N, K/2] (the checkpoint's own nibble order),
    scales FLOAT8E8M0 [E, N, K/32], per-expert global scales 1, interleaved SwiGLU with limit and alpha."""
    ones = graph.weight(LazyTensor("model.experts.global_scale", (cfg.num_experts,), np.float32,
                                   lambda: np.ones(cfg.num_experts, np.float32), "experts"))
    for node in graph.nodes_of("MoE", GPTOSS_DOMAIN):
        x, logits, gu_blocks, gu_scales, gu_bias, d_blocks, d_scales, d_bias = node.input
        attrs = _attrs(node)
        inputs = [x, logits,
                  _qmoe_weights(graph, gu_blocks, gu_scales), _qmoe_scales(graph, gu_scales), gu_bias,
                  _qmoe_weights(graph, d_blocks, d_scales), _qmoe_scales(graph, d_scales), d_bias,
                  "", "", "", "", "", "", "", ones, ones]
        qmoe = helper.make_node(
            "QMoE", inputs, list(node.output), name=node.name, domain=MS_DOMAIN,
            k=attrs["top_k"], activation_type="swiglu", swiglu_fusion=1, swiglu_limit=float(attrs["swiglu_limit"]),
            activation_alpha=1.702, activation_beta=1.0, normalize_routing_weights=1,
            quant_type="fp4", weights_prepacked=1, expert_weight_bits=4, block_size=BLOCK)
        _replace_node(graph, node, [qmoe])
    graph.opsets.setdefault(MS_DOMAIN, 1)
    return graph


def _qmoe_weights(graph: Graph, blocks_name: str, scales_name: str) -> str:
    src = graph.initializers[blocks_name]
    e, n, groups, _ = src.shape
    read, blocks_key, scales_key = graph.source, _canonical(blocks_name), _canonical(scales_name)
    return graph.weight(LazyTensor(
        f"{blocks_name}.qmoe", (e, n, groups * 16), np.uint8,
        lambda: pack_qmoe_fp4(read(blocks_key), read(scales_key), name=blocks_key)[0], "experts"))


def _qmoe_scales(graph: Graph, scales_name: str) -> str:
    src = graph.initializers[scales_name]
    return graph.weight(LazyTensor(f"{scales_name}.e8m0", src.shape, np.uint8, src.produce, "experts",
                                   onnx_type=TensorProto.FLOAT8E8M0))


# ------------------------------------------------------------------------------------- attention
def attention_to_gqa(graph: Graph, cfg, schemes: dict[str, str], options=None) -> Graph:
    """gptoss.Attention -> GroupQueryAttention with head_sink and local_window_size = window; RoPE applied by
    the op from cos/sin caches at the explicit position_ids.

    The lowered graph speaks the "shared" KV contract (options["kv_cache"], written into the manifest): past and
    present are one preallocated buffer per layer [B, kv, capacity, hd] that the runtime binds as both, so no step
    copies the cache. Lengths are absolute (from position_ids); full layers write at their positions, sliding
    layers use the op's own window cache (sliding_window_cache=1, capacity >= window).
    """
    from gptoss.export.model import yarn_inv_freq

    kv_mode = (options or {}).get("kv_cache")
    if kv_mode != "shared":
        raise ExportError(f"attention_to_gqa lowers to shared KV buffers; the target row says kv_cache={kv_mode!r}")
    max_pos = cfg.max_position_embeddings
    inv_freq, concentration = yarn_inv_freq(cfg)

    def table(fn) -> Callable[[], np.ndarray]:
        def produce():
            freqs = np.arange(max_pos, dtype=np.float32)[:, None] * inv_freq.numpy()[None, :]
            return (fn(freqs) * np.float32(concentration)).astype(np.float32)
        return produce

    half = cfg.head_dim // 2
    cos = graph.weight(LazyTensor("model.rotary.cos_cache", (max_pos, half), np.float32, table(np.cos), "attention"))
    sin = graph.weight(LazyTensor("model.rotary.sin_cache", (max_pos, half), np.float32, table(np.sin), "attention"))
    seqlens, total = _absolute_lengths(graph)
    for node in graph.nodes_of("Attention", GPTOSS_DOMAIN):
        q, k, v, past_k, past_v, _cos, _sin, sinks = node.input
        attrs = _attrs(node)
        window = attrs["window"]
        sliding = {"local_window_size": window, "sliding_window_cache": 1} if window > 0 else {"local_window_size": -1}
        gqa = helper.make_node(
            "GroupQueryAttention",
            [q, k, v, past_k, past_v, seqlens, total, cos, sin, "position_ids", "", sinks],
            list(node.output), name=node.name, domain=MS_DOMAIN,
            num_heads=attrs["num_heads"], kv_num_heads=attrs["kv_num_heads"], do_rotary=1, rotary_interleaved=0,
            **sliding)
        _replace_node(graph, node, [gqa])
    graph.opsets.setdefault(MS_DOMAIN, 1)
    return graph


def _absolute_lengths(graph: Graph) -> tuple[str, str]:
    """seqlens_k [B] = last position, total_sequence_length = last position + 1 (int32), from position_ids;
    emitted once at the top of the graph for every layer."""
    p = "/model/attention_lengths"
    last, longest, total64 = f"{p}/last_position", f"{p}/longest", f"{p}/total64"
    seqlens, total = f"{p}/seqlens_k", f"{p}/total_sequence_length"
    graph.nodes[0:0] = [
        helper.make_node("ReduceMax", ["position_ids", graph.const([1])], [last], name=last, keepdims=0),
        helper.make_node("Cast", [last], [seqlens], name=seqlens, to=TensorProto.INT32),
        helper.make_node("ReduceMax", [last], [longest], name=longest, keepdims=0),
        helper.make_node("Add", [longest, graph.const(1)], [total64], name=total64),
        helper.make_node("Cast", [total64], [total], name=total, to=TensorProto.INT32),
    ]
    return seqlens, total


# ---------------------------------------------------------------------------------- dense weights
def _memo_quantize(read, canonical: str, bits: int, pack) -> Callable[[], object]:
    """Quantize+pack a [rows, K] weight once, in row chunks; both of its arrays are served from one result."""
    memo = {}

    def packed():
        if "p" not in memo:
            w = read(canonical)
            chunks = [pack(quantize_blockwise(np.asarray(w[r:r + ROW_CHUNK], np.float32), bits=bits,
                                              block_size=BLOCK, name=canonical), name=canonical)
                      for r in range(0, w.shape[0], ROW_CHUNK)]
            memo["p"] = (np.concatenate([c.data for c in chunks]), np.concatenate([c.scales for c in chunks]))
        return memo["p"]

    def take(i):
        def produce():
            arr = packed()[i]
            if i == 1:
                memo.clear()   # scales are written right after the data: free the pair
            return arr
        return produce

    return take


def dense_to_matmul_nbits(graph: Graph, cfg, schemes: dict[str, str], options=None) -> Graph:
    """MatMul(x, W[in,out] fp32) -> MatMulNBits(x, W int8|int4 blocks of 32 along `in`), per part's scheme.

    options["matmul_accuracy_level"]: MatMulNBits' accuracy_level (0: fp32 activations, 4: int8 activations)."""
    accuracy_level = int((options or {}).get("matmul_accuracy_level", 0))
    for node in list(graph.nodes):
        if node.op_type != "MatMul" or node.input[1] not in graph.initializers:
            continue
        weight = graph.initializers[node.input[1]]
        bits = {"int8": 8, "int4": 4}.get(schemes.get(weight.part, "fp32"))
        if bits is None:
            continue
        K, N = weight.shape
        if K % BLOCK:
            raise ExportError(f"{weight.name}: input size {K} is not a multiple of the block size {BLOCK}")
        canonical = _canonical(weight.name)   # the checkpoint's [out, in] = [N, K]: MatMulNBits' own layout
        take = _memo_quantize(graph.source, canonical, bits, pack_matmul_nbits)
        nb = K // BLOCK
        data = graph.weight(LazyTensor(f"{weight.name}.q{bits}", (N, nb, BLOCK * bits // 8), np.uint8,
                                       lambda t=take, shape=(N, nb, -1): t(0)().reshape(shape), weight.part))
        scales = graph.weight(LazyTensor(f"{weight.name}.scales", (N * nb,), np.float32,
                                         lambda t=take: t(1)().reshape(-1), weight.part))
        new = helper.make_node("MatMulNBits", [node.input[0], data, scales], list(node.output), name=node.name,
                               domain=MS_DOMAIN, K=K, N=N, bits=bits, block_size=BLOCK, accuracy_level=accuracy_level)
        _replace_node(graph, node, [new])
    graph.drop_unused()
    graph.opsets.setdefault(MS_DOMAIN, 1)
    return graph


def embedding_to_gather_quantized(graph: Graph, cfg, schemes: dict[str, str], options=None) -> Graph:
    """Gather(embedding fp32) -> GatherBlockQuantized(int8|int4, blocks of 32 along hidden), or an fp16 table."""
    scheme = schemes.get("embedding", "fp32")
    node = next((n for n in graph.nodes if n.op_type == "Gather" and n.input[0] == "model.embedding"), None)
    if node is None or scheme == "fp32":
        return graph
    table = graph.initializers["model.embedding"]
    V, H = table.shape
    if scheme == "fp16":
        read = graph.source
        data = graph.weight(LazyTensor("model.embedding.fp16", (V, H), np.float16,
                                       lambda: np.asarray(read("embedding"), np.float16), "embedding"))
        gathered = f"{node.name}/fp16"
        _replace_node(graph, node, [
            helper.make_node("Gather", [data, node.input[1]], [gathered], name=gathered, axis=0),
            helper.make_node("Cast", [gathered], list(node.output), name=node.name, to=TensorProto.FLOAT)])
    else:
        bits = {"int8": 8, "int4": 4}[scheme]
        take = _memo_quantize(graph.source, "embedding", bits, pack_gather_block_quantized)
        data = graph.weight(LazyTensor(f"model.embedding.q{bits}", (V, H * bits // 8), np.uint8, take(0),
                                       "embedding"))
        scales = graph.weight(LazyTensor("model.embedding.scales", (V, H // BLOCK), np.float32, take(1), "embedding"))
        _replace_node(graph, node, [helper.make_node(
            "GatherBlockQuantized", [data, node.input[1], scales], list(node.output), name=node.name,
            domain=MS_DOMAIN, gather_axis=0, quantize_axis=1, block_size=BLOCK, bits=bits)])
    graph.drop_unused()
    graph.opsets.setdefault(MS_DOMAIN, 1)
    return graph


PASSES: dict[str, Callable[..., Graph]] = {
    "moe_to_qmoe": moe_to_qmoe,
    "attention_to_gqa": attention_to_gqa,
    "dense_to_matmul_nbits": dense_to_matmul_nbits,
    "embedding_to_gather_quantized": embedding_to_gather_quantized,
}


def check_lowered(graph: Graph, target) -> None:
    """Boundary checks after lowering: expected ops present, no custom op or float expert weight left."""
    left = [n.name for n in graph.nodes if n.domain == GPTOSS_DOMAIN and target.passes]
    if left:
        raise ExportError(f"target {target.name}: custom ops left after lowering: {left[:3]}")
    present = {f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in graph.nodes}
    missing = [op for op in target.ops if op not in present]
    if missing:
        raise ExportError(f"target {target.name}: lowered graph lacks {missing}")
    float_experts = [t.name for t in graph.initializers.values()
                     if t.part == "experts" and np.dtype(t.dtype) == np.float32 and len(t.shape) >= 3]
    if float_experts:
        raise ExportError(f"target {target.name}: float expert weights left: {float_experts[:3]}")
