"""Micro-benchmark: one gpt-oss-20b-sized QMoE layer on the ONNX Runtime CPU provider.

    python bench/qmoe_micro.py --threads 2 --tokens 1 --iters 50

E=32 experts, top-4, hidden 2880, intermediate 2880, random weights (speed does not depend on
the values). Compares the MXFP4 recipe (quant_type="fp4") with block-32 int4 and int8
(quant_type="int") and prints the median and p90 latency per call. The recipes are the ones
pinned in tests/targets/test_ort_qmoe.py and written up in docs/ort-contrib-ops.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

EXPERTS, TOP_K, HIDDEN, INTER = 32, 4, 2880, 2880


def _e8m0(name: str, scales: np.ndarray):
    return helper.make_tensor(name, TensorProto.FLOAT8E8M0, scales.shape, scales.tobytes(), raw=True)


def build(kind: str, rng: np.random.Generator, accuracy_level: int = 0) -> bytes:
    """A one-node QMoE model; kind is 'fp4', 'int4' or 'int8'."""
    e, h, i = EXPERTS, HIDDEN, INTER
    bits = 8 if kind == "int8" else 4
    w1 = rng.integers(0, 256, (e, 2 * i, h * bits // 8), dtype=np.uint8)
    w2 = rng.integers(0, 256, (e, h, i * bits // 8), dtype=np.uint8)
    if kind == "fp4":
        s1 = _e8m0("s1", rng.integers(118, 124, (e, 2 * i, h // 32), dtype=np.uint8))
        s2 = _e8m0("s2", rng.integers(118, 124, (e, h, i // 32), dtype=np.uint8))
    else:
        s1 = numpy_helper.from_array(rng.uniform(1e-3, 1e-2, (e, 2 * i, h // 32)).astype(np.float32), "s1")
        s2 = numpy_helper.from_array(rng.uniform(1e-3, 1e-2, (e, h, i // 32)).astype(np.float32), "s2")
    inits = [
        numpy_helper.from_array(w1, "w1"), s1,
        numpy_helper.from_array(rng.standard_normal((e, 2 * i)).astype(np.float32), "b1"),
        numpy_helper.from_array(w2, "w2"), s2,
        numpy_helper.from_array(rng.standard_normal((e, h)).astype(np.float32), "b2"),
    ]
    inputs = ["x", "router_logits", "w1", "s1", "b1", "w2", "s2", "b2"]
    attrs = dict(
        k=TOP_K, activation_type="swiglu", swiglu_fusion=1, swiglu_limit=7.0, activation_alpha=1.702,
        activation_beta=1.0, normalize_routing_weights=1, expert_weight_bits=bits, block_size=32,
    )
    if kind == "fp4":
        ones = np.ones(e, np.float32)
        inits += [numpy_helper.from_array(ones, "g1"), numpy_helper.from_array(ones, "g2")]
        inputs += [""] * 7 + ["g1", "g2"]
        attrs.update(quant_type="fp4", weights_prepacked=1)
    else:
        attrs.update(quant_type="int", weights_prepacked=0, accuracy_level=accuracy_level)
    node = helper.make_node("QMoE", inputs, ["y"], domain="com.microsoft", name="/moe", **attrs)
    graph = helper.make_graph(
        [node], "qmoe_micro",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", h]),
         helper.make_tensor_value_info("router_logits", TensorProto.FLOAT, ["T", e])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", h])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    return model.SerializeToString()


def time_one(model: bytes, threads: int, tokens: int, iters: int, rng: np.random.Generator) -> tuple[float, float, float]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    t0 = time.perf_counter()
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    setup_s = time.perf_counter() - t0
    feeds = [
        {"x": rng.standard_normal((tokens, HIDDEN)).astype(np.float32),
         "router_logits": rng.standard_normal((tokens, EXPERTS)).astype(np.float32)}
        for _ in range(8)
    ]
    for f in feeds[:3]:
        sess.run(None, f)
    times = []
    for n in range(iters):
        t = time.perf_counter()
        sess.run(None, feeds[n % len(feeds)])  # different routing each call, as in decoding
        times.append(time.perf_counter() - t)
    ms = np.array(times) * 1e3
    return float(np.median(ms)), float(np.percentile(ms, 90)), setup_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=1)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--kinds", default="fp4,int4,int4-acc4,int8")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    print(f"onnxruntime {ort.__version__}  E={EXPERTS} top-{TOP_K} H={HIDDEN} I={INTER} "
          f"T={args.tokens} threads={args.threads} iters={args.iters}")
    for kind in args.kinds.split(","):
        base, _, acc = kind.partition("-acc")
        med, p90, setup = time_one(build(base, rng, int(acc or 0)), args.threads, args.tokens, args.iters, rng)
        print(f"{kind:10s} median {med:8.2f} ms   p90 {p90:8.2f} ms   session {setup:5.1f} s")


if __name__ == "__main__":
    main()
