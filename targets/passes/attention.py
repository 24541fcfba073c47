"""gptoss.Attention -> com.microsoft.GroupQueryAttention: sinks, window, rotary, and the "shared" KV contract.

    GroupQueryAttention(q, k, v, past_key.i, past_value.i, seqlens_k, total_sequence_length,
                        cos_cache, sin_cache, position_ids, -, sinks)
        head_sink = sinks; local_window_size = window (counting the query itself) on sliding layers;
        do_rotary = 1 from cos/sin caches [max_positions, head_dim/2] built from the portable graph's own YaRN
        constants; past and present are ONE buffer per layer that the runtime binds as both ("shared"):
        full layers write the new rows at their absolute positions (from position_ids). Sliding layers either live
        in the op's own window cache (sliding_window_cache = 1) of `window_factor` x window rows (the CPU kernel
        takes any capacity >= window, 2x compacts once per window; CUDA's needs exactly the window), or, where the
        kernel has no window cache (WebGPU), keep a full-length buffer in which the window is only a mask.

    A capturable graph (target `graph_capture`) takes seqlens_k and total_sequence_length as inputs instead of
    computing them from position_ids on the CPU.

    With an int8 cache asked for (`--kv-cache int8`, ctx.kv_dtype): the buffers are int8 and the op quantizes the
    rows it writes (k_quant_type = v_quant_type = PER_CHANNEL, kv_cache_bit_width = 8) with one scale per (KV head,
    channel) per layer, constants `layers.{i}.attn.k_scale` / `v_scale` [kv_heads * head_dim]. They are written as
    ones here and measured after the bundle is written (compile/calibrate.py), from a calibration prompt run through
    the same graph with a float32 cache.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

import numpy as np
from onnx import TensorProto, helper

from gptoss.bundle import names
from gptoss.bundle.kv import KVContract
from gptoss.bundle.manifest import GraphContract
from gptoss.ir.graph import (GPTOSS_DOMAIN, MAX_POSITIONS, MS_DOMAIN, ROTARY_CONCENTRATION, ROTARY_INV_FREQ, Graph,
                             LazyTensor, node_attributes)

from ..base import LoweringContext, TargetError


@dataclass(frozen=True)
class AttentionToGQA:
    window_cache: bool = True
    window_factor: int = 2
    name = "attention_to_gqa"

    def __call__(self, graph: Graph, contract: GraphContract, ctx: LoweringContext) -> GraphContract:
        if contract.kv.mode != "concat":
            raise TargetError(f"{self.name} lowers the portable (concat) attention, not a {contract.kv.mode!r} one")
        quantized = ctx.kv_dtype == "int8"
        if ctx.kv_dtype not in (None, contract.kv.dtype, "int8"):
            raise TargetError(f"{self.name}: a {ctx.kv_dtype} cache is not one GroupQueryAttention here can keep")
        cos, sin = _rotary_caches(graph, contract.kv.head_dim, np.dtype(contract.kv.dtype))
        seqlens, total = _length_inputs(graph) if ctx.capturable else _absolute_lengths(graph)
        for i, node in enumerate(graph.nodes_of("Attention", GPTOSS_DOMAIN)):
            q, k, v, past_k, past_v, _cos, _sin, sinks = node.input
            attrs = node_attributes(node)
            window = attrs["window"]
            sliding = {"local_window_size": window if window > 0 else -1}
            if window > 0 and self.window_cache:
                sliding["sliding_window_cache"] = 1
            inputs = [q, k, v, past_k, past_v, seqlens, total, cos, sin, "position_ids", "", sinks]
            if quantized:
                inputs += _cache_scales(graph, i, contract.kv.num_kv_heads * contract.kv.head_dim)
                sliding.update(INT8_CACHE)
            graph.replace_node(node, [helper.make_node(
                "GroupQueryAttention", inputs, list(node.output), name=node.name, domain=MS_DOMAIN,
                num_heads=attrs["num_heads"], kv_num_heads=attrs["kv_num_heads"], do_rotary=1, rotary_interleaved=0,
                **sliding)])
        graph.opsets.setdefault(MS_DOMAIN, 1)
        kv: KVContract = contract.kv
        capacity = tuple(self.window_factor * w if w > 0 and self.window_cache else None for w in kv.window)
        shared = dataclasses.replace(kv, mode="shared", capacity=capacity, dtype="int8" if quantized else kv.dtype)
        shared.validate()
        if quantized:
            retype_cache_io([*graph.inputs, *graph.outputs], kv.num_layers, TensorProto.INT8)
        return dataclasses.replace(contract, kv=shared)


INT8_CACHE = {"k_quant_type": "PER_CHANNEL", "v_quant_type": "PER_CHANNEL", "kv_cache_bit_width": 8}


def cache_scale_names(layer: int) -> tuple[str, str]:
    """The constants holding layer `layer`'s int8 cache scales (key, value), [kv_heads * head_dim] float32."""
    return f"layers.{layer}.attn.k_scale", f"layers.{layer}.attn.v_scale"


def _cache_scales(graph: Graph, layer: int, channels: int) -> list[str]:
    return [graph.weight(LazyTensor(name, (channels,), np.dtype(np.float32),
                                    lambda: np.ones(channels, np.float32), "attention"))
            for name in cache_scale_names(layer)]


def retype_cache_io(values, layers: int, elem_type: int) -> None:
    """Of the graph inputs and outputs `values` (ValueInfoProtos), the caches' hold `elem_type` (a TensorProto type)."""
    cache = {name for i in range(layers) for name in names.kv_names(i)}
    for value in values:
        if value.name in cache:
            value.type.tensor_type.elem_type = elem_type


def _rotary_caches(graph: Graph, head_dim: int, dtype: np.dtype) -> tuple[str, str]:
    """cos/sin caches [max_positions, head_dim/2] (computed in fp32, stored in the attention's dtype) from the
    portable graph's YaRN constants."""
    inv_freq = graph.constant_value(ROTARY_INV_FREQ).astype(np.float32)
    concentration = np.float32(graph.constant_value(ROTARY_CONCENTRATION))
    max_pos = int(graph.meta[MAX_POSITIONS])

    def table(fn) -> Callable[[], np.ndarray]:
        def produce():
            freqs = np.arange(max_pos, dtype=np.float32)[:, None] * inv_freq[None, :]
            return (fn(freqs) * concentration).astype(np.float32).astype(dtype)
        return produce

    half = head_dim // 2
    cos = graph.weight(LazyTensor("model.rotary.cos_cache", (max_pos, half), dtype, table(np.cos), "attention"))
    sin = graph.weight(LazyTensor("model.rotary.sin_cache", (max_pos, half), dtype, table(np.sin), "attention"))
    return cos, sin


def _length_inputs(graph: Graph) -> tuple[str, str]:
    """seqlens_k [B] and total_sequence_length [] (int32) as graph inputs that the runtime feeds: a graph whose
    decode step is captured and replayed holds no CPU node, and _absolute_lengths' int64 arithmetic runs on the CPU.
    A captured step is fed total_sequence_length = the cache's rows (fixed across replays; the rows past seqlens_k
    are masked), any other call its true total."""
    return (graph.add_input(names.SEQLENS_K, TensorProto.INT32, ["batch"]),
            graph.add_input(names.TOTAL_SEQUENCE_LENGTH, TensorProto.INT32, []))


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
