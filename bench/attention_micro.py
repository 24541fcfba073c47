"""One full-attention layer's GroupQueryAttention decode step at long context, in the variants ONNX Runtime's CPU
kernel offers, at gpt-oss-20b's shapes (64 query heads, 8 KV heads, head_dim 64). Prints one JSON document.

    python bench/attention_micro.py [--contexts 1024 8192 32768] [--calls 30] [--rounds 3] [--threads 2]
                                    [--evict-mib 1024]

Variants (each one GroupQueryAttention node, past and present bound to one buffer, as the `cpu` target runs it):
  sink            head_sink input, float32 cache (today's `cpu` target)
  nosink          no head_sink (not gpt-oss: shows what the kernel does without it)
  sink_as_bias    no head_sink; the cache's slot 0 holds a zero key and value, and an additive attention_bias
                  [1, heads, 1, T] puts each head's sink logit on that slot: exactly the sink's extra softmax term
  fp16            head_sink, a float16 cache under float32 activations (the kernel converts rows as it reads)
  int8, int8_bias the same two over an int8 per-channel cache (k_quant_type/v_quant_type, kv_cache_bit_width=8)
  matmul          the cpu target's full layers today: no GroupQueryAttention, the plain matrix products that
                  targets/passes/full_attention.py puts in its place, float32 cache
--evict-mib N reads an N MiB array before each timed call (not timed), so the call finds the cache cold in the
CPU's caches, as it does inside the model, where the weights stream between two calls of a layer.
Every variant's output is compared with `sink`'s on the same data (max abs difference reported).
Rounds alternate the variants' order; per variant and context: median, min and max milliseconds per call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

HEADS, KV_HEADS, HEAD_DIM = 64, 8, 64
VARIANTS = ("sink", "nosink", "sink_as_bias", "fp16", "int8", "int8_bias", "matmul")


def matmul_model(capacity: int) -> bytes:
    """The cpu target's full layer: the nodes targets/passes/full_attention.py puts in place of the `sink` GQA node
    (one token: its If takes the matrix products)."""
    from gptoss.ir.graph import Graph
    from gptoss.targets.passes.full_attention import plain_full_attention

    f = TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("q", f, [1, 1, HEADS * HEAD_DIM]),
              helper.make_tensor_value_info("k", f, [1, 1, KV_HEADS * HEAD_DIM]),
              helper.make_tensor_value_info("v", f, [1, 1, KV_HEADS * HEAD_DIM]),
              helper.make_tensor_value_info("past_key", f, [1, KV_HEADS, capacity, HEAD_DIM]),
              helper.make_tensor_value_info("past_value", f, [1, KV_HEADS, capacity, HEAD_DIM]),
              helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),     # for the prompt branch
              helper.make_tensor_value_info("total", TensorProto.INT32, [1]),
              helper.make_tensor_value_info("cos", f, [capacity, HEAD_DIM // 2]),
              helper.make_tensor_value_info("sin", f, [capacity, HEAD_DIM // 2]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, 1]),
              helper.make_tensor_value_info("sinks", f, [HEADS])]
    gqa = helper.make_node("GroupQueryAttention", ["q", "k", "v", "past_key", "past_value", "seqlens_k", "total",
                                                   "cos", "sin", "position_ids", "", "sinks"],
                           ["out", "present_key", "present_value"], name="/attn")
    constants = Graph("attention_micro")
    nodes = plain_full_attention(constants, gqa, HEADS, KV_HEADS, HEAD_DIM)
    outputs = [helper.make_tensor_value_info("out", f, [1, 1, HEADS * HEAD_DIM]),
               helper.make_tensor_value_info("present_key", f, [1, KV_HEADS, capacity, HEAD_DIM]),
               helper.make_tensor_value_info("present_value", f, [1, KV_HEADS, capacity, HEAD_DIM])]
    graph = helper.make_graph(nodes, "matmul", inputs, outputs, list(constants.constants.values()))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23),
                                                   helper.make_opsetid("com.microsoft", 1)]).SerializeToString()


def model(variant: str, capacity: int) -> bytes:
    if variant == "matmul":
        return matmul_model(capacity)
    quantized = variant.startswith("int8")
    bias = variant in ("sink_as_bias", "int8_bias")
    sink = variant in ("sink", "int8", "fp16")
    cache_type = TensorProto.INT8 if quantized else TensorProto.FLOAT16 if variant == "fp16" else TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("q", TensorProto.FLOAT, [1, 1, HEADS * HEAD_DIM]),
              helper.make_tensor_value_info("k", TensorProto.FLOAT, [1, 1, KV_HEADS * HEAD_DIM]),
              helper.make_tensor_value_info("v", TensorProto.FLOAT, [1, 1, KV_HEADS * HEAD_DIM]),
              helper.make_tensor_value_info("past_key", cache_type, [1, KV_HEADS, capacity, HEAD_DIM]),
              helper.make_tensor_value_info("past_value", cache_type, [1, KV_HEADS, capacity, HEAD_DIM]),
              helper.make_tensor_value_info("seqlens_k", TensorProto.INT32, [1]),
              helper.make_tensor_value_info("total", TensorProto.INT32, [1]),
              helper.make_tensor_value_info("cos", TensorProto.FLOAT, [capacity, HEAD_DIM // 2]),
              helper.make_tensor_value_info("sin", TensorProto.FLOAT, [capacity, HEAD_DIM // 2]),
              helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, 1])]
    names = ["q", "k", "v", "past_key", "past_value", "seqlens_k", "total", "cos", "sin", "position_ids"]
    if bias:
        inputs.append(helper.make_tensor_value_info("bias", TensorProto.FLOAT, [1, HEADS, 1, "T"]))
    names += ["bias" if bias else "", "sinks" if sink else ""]
    if sink:
        inputs.append(helper.make_tensor_value_info("sinks", TensorProto.FLOAT, [HEADS]))
    attrs = {}
    if quantized:
        names += ["k_scale", "v_scale"]
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [KV_HEADS * HEAD_DIM])
                   for n in ("k_scale", "v_scale")]
        attrs = {"k_quant_type": "PER_CHANNEL", "v_quant_type": "PER_CHANNEL", "kv_cache_bit_width": 8}
    while names and names[-1] == "":
        names.pop()
    node = helper.make_node("GroupQueryAttention", names, ["out", "present_key", "present_value"],
                            domain="com.microsoft", num_heads=HEADS, kv_num_heads=KV_HEADS, do_rotary=1, **attrs)
    outputs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 1, HEADS * HEAD_DIM]),
               helper.make_tensor_value_info("present_key", cache_type, [1, KV_HEADS, capacity, HEAD_DIM]),
               helper.make_tensor_value_info("present_value", cache_type, [1, KV_HEADS, capacity, HEAD_DIM])]
    graph = helper.make_graph([node], "gqa", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 23),
                                                   helper.make_opsetid("com.microsoft", 1)]).SerializeToString()


class Case:
    """One variant at one context: its session, bound buffers and feeds; `run()` is one decode call."""

    def __init__(self, variant: str, context: int, threads: int, rng: np.random.Generator):
        shift = 1 if variant.endswith("bias") else 0          # slot 0 holds the sink's zero key and value
        capacity = context + 1 + shift
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        self.session = ort.InferenceSession(model(variant, capacity), so, providers=["CPUExecutionProvider"])
        quantized = variant.startswith("int8")
        keys = rng.standard_normal((1, KV_HEADS, context + 1, HEAD_DIM), dtype=np.float32)
        values = rng.standard_normal((1, KV_HEADS, context + 1, HEAD_DIM), dtype=np.float32)
        if shift:                                              # the same rows, one slot later, a zero row first
            zero = np.zeros((1, KV_HEADS, 1, HEAD_DIM), np.float32)
            keys, values = np.concatenate([zero, keys], axis=2), np.concatenate([zero, values], axis=2)
        feeds = {"q": rng.standard_normal((1, 1, HEADS * HEAD_DIM), dtype=np.float32),
                 "k": rng.standard_normal((1, 1, KV_HEADS * HEAD_DIM), dtype=np.float32),
                 "v": rng.standard_normal((1, 1, KV_HEADS * HEAD_DIM), dtype=np.float32),
                 "seqlens_k": np.array([context + shift], np.int32), "total": np.array([context + 1 + shift], np.int32),
                 "position_ids": np.array([[context + shift]], np.int64)}
        angles = (np.arange(capacity) - shift)[:, None] / 10000 ** (np.arange(HEAD_DIM // 2) / (HEAD_DIM // 2))
        feeds["cos"], feeds["sin"] = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
        sinks = rng.standard_normal(HEADS).astype(np.float32)
        if variant in ("sink", "int8", "fp16", "matmul"):
            feeds["sinks"] = sinks
        if variant == "fp16":
            keys, values = keys.astype(np.float16), values.astype(np.float16)
        if shift:
            bias = np.zeros((1, HEADS, 1, context + 1 + shift), np.float32)
            bias[0, :, 0, 0] = sinks
            feeds["bias"] = bias
        if quantized:
            scale = (np.abs(np.concatenate([keys, values])).max(axis=(0, 2)).reshape(-1) / 127).astype(np.float32)
            feeds["k_scale"] = feeds["v_scale"] = scale
            def q(x):
                return np.clip(np.round(x / scale.reshape(1, KV_HEADS, 1, HEAD_DIM)), -127, 127).astype(np.int8)
            keys, values = q(keys), q(values)
        self.binding = self.session.io_binding()
        for name, value in feeds.items():
            self.binding.bind_cpu_input(name, value)
        self.cache = {}
        for name, value in (("key", keys), ("value", values)):
            buf = ort.OrtValue.ortvalue_from_numpy(value)
            self.cache[name] = buf
            self.binding.bind_ortvalue_input(f"past_{name}", buf)
            self.binding.bind_ortvalue_output(f"present_{name}", buf)
        self.binding.bind_output("out")

    def run(self) -> float:
        t0 = time.perf_counter()
        self.session.run_with_iobinding(self.binding)
        return time.perf_counter() - t0

    def output(self) -> np.ndarray:
        return self.binding.copy_outputs_to_cpu()[-1]          # "out" was bound last


def timed_call(case: Case, sweep: np.ndarray | None) -> float:
    """One call's seconds; first, untimed, a read of `sweep` (when given) to push the cache out of the CPU's caches."""
    if sweep is not None:
        sweep.sum()
    return case.run()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contexts", type=int, nargs="*", default=[1024, 8192, 32768])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument("--evict-mib", type=int, default=0, help="read this many MiB before each call (cold caches)")
    args = parser.parse_args()
    result: dict = {"ort": ort.__version__, "threads": args.threads, "calls": args.calls,
                    "evict_mib": args.evict_mib, "contexts": {}}
    for context in args.contexts:
        times: dict[str, list[float]] = {v: [] for v in args.variants}
        cases = {v: Case(v, context, args.threads, np.random.default_rng(0)) for v in args.variants}
        sweep = np.ones(args.evict_mib << 17) if args.evict_mib else None          # float64: MiB * 2**20 / 8
        # note: the same seed gives every variant the same random draws in the same order
        for r in range(args.rounds):
            order = args.variants if r % 2 == 0 else list(reversed(args.variants))
            for v in order:
                cases[v].run()                                    # warm
                times[v] += [timed_call(cases[v], sweep) for _ in range(args.calls)]
        reference = cases["sink"].output() if "sink" in cases else None
        result["contexts"][context] = {
            v: {"ms_median": 1e3 * statistics.median(t), "ms_min": 1e3 * min(t), "ms_max": 1e3 * max(t),
                "max_abs_diff_vs_sink": None if reference is None else float(np.abs(cases[v].output() - reference).max())}
            for v, t in times.items()}
        print(context, json.dumps(result["contexts"][context]), file=sys.stderr)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
