"""How fast could a native MXFP4 kernel run gpt-oss-20b's decode experts on this CPU? (issue 13, item 2)

    python bench/native_gemv.py [--threads 2] [--rounds 3] [--calls 40] [--layers 3] [--json OUT]

bench/roofline.py found ONNX Runtime's QMoE fp4 streaming the active experts at about 55% of the read bandwidth. This
compiles bench/native/mxfp4_gemv.c (a plain AVX-512 matrix-vector product over the checkpoint's own MXFP4 bytes,
exact float32 arithmetic, OpenMP over rows) with the machine's gcc and times one decode MoE layer with it, side by
side with QMoE fp4 on the same shapes: 4 of 32 experts, gate/up [5760, 2880], SwiGLU (numpy), down [2880, 2880].
Each call runs `--layers` layers of experts (423 MB each; QMoE's as one graph of chained nodes) and is timed per
layer, so the weights come from memory, not the CPU's caches (this VM reports a 480 MB L3), as they do in the
model. Rounds alternate the two sides. The kernel is a measurement, not part of gptoss (the runtime
wheel carries no native code).

Exactness: each product is checked against the dequantized weights times x in float64 (relative error reported).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks import memory_bandwidth_gbs  # noqa: E402
from qmoe_micro import EXPERTS, HIDDEN, INTER, TOP_K, build as build_qmoe  # noqa: E402

SOURCE = Path(__file__).resolve().parent / "native" / "mxfp4_gemv.c"


def compile_kernel(folder: Path) -> ctypes.CDLL:
    """gcc -O3 -march=native -fopenmp; a clear exit when the compiler or AVX-512 is missing."""
    lib = folder / "mxfp4_gemv.so"
    cmd = ["gcc", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", str(SOURCE), "-o", str(lib)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError:
        sys.exit("native_gemv.py needs gcc on PATH")
    except subprocess.CalledProcessError as e:
        sys.exit(f"compiling {SOURCE.name} failed (it needs AVX-512F):\n{e.stderr}")
    dll = ctypes.CDLL(str(lib))
    dll.mxfp4_gemv.restype = None
    dll.mxfp4_gemv.argtypes = [ctypes.c_void_p] * 4 + [ctypes.c_int] * 3
    return dll


class NativeMoE:
    """One layer's experts in the checkpoint's layout, run by the native GEMV for one token."""

    def __init__(self, dll, rng: np.random.Generator, threads: int):
        self.dll, self.threads = dll, threads
        self.w1 = rng.integers(0, 256, (EXPERTS, 2 * INTER, HIDDEN // 32, 16), dtype=np.uint8)
        self.s1 = rng.integers(118, 124, (EXPERTS, 2 * INTER, HIDDEN // 32), dtype=np.uint8)
        self.w2 = rng.integers(0, 256, (EXPERTS, HIDDEN, INTER // 32, 16), dtype=np.uint8)
        self.s2 = rng.integers(118, 124, (EXPERTS, HIDDEN, INTER // 32), dtype=np.uint8)

    def gemv(self, codes: np.ndarray, scales: np.ndarray, x: np.ndarray) -> np.ndarray:
        n, k = codes.shape[0], codes.shape[1] * 32
        y = np.empty(n, np.float32)
        self.dll.mxfp4_gemv(codes.ctypes.data, scales.ctypes.data, x.ctypes.data, y.ctypes.data, n, k, self.threads)
        return y

    def __call__(self, x: np.ndarray, experts: np.ndarray, weights: np.ndarray) -> np.ndarray:
        out = np.zeros(HIDDEN, np.float32)
        for e, w in zip(experts, weights):
            h = self.gemv(self.w1[e], self.s1[e], x)
            glu, lin = np.minimum(h[0::2], 7.0), np.clip(h[1::2], -7.0, 7.0)
            act = (glu / (1 + np.exp(-1.702 * glu)) * (lin + 1)).astype(np.float32)
            out += w * self.gemv(self.w2[e], self.s2[e], act)
        return out


def chained_qmoe(rng: np.random.Generator, layers: int) -> bytes:
    """`layers` QMoE fp4 nodes (bench/qmoe_micro.py's) in one graph, each layer's output the next one's input, all
    routed by the same logits: one session and one thread pool, as in the model (separate sessions' pools spin
    against each other on 2 cores)."""
    import onnx
    from onnx import helper

    nodes, inits = [], []
    for layer in range(layers):
        graph = onnx.load_from_string(build_qmoe("fp4", rng)).graph
        renamed = {t.name: f"{t.name}.{layer}" for t in graph.initializer}
        for t in graph.initializer:
            t.name = renamed[t.name]
        inits += graph.initializer
        node = graph.node[0]
        node.input[:] = [renamed.get(i, i) for i in node.input]
        node.input[0] = "x" if layer == 0 else f"y.{layer - 1}"
        node.output[0] = "y" if layer == layers - 1 else f"y.{layer}"
        node.name = f"/moe.{layer}"
        nodes.append(node)
    chain = helper.make_graph(nodes, "qmoe_chain", list(graph.input), list(graph.output), inits)
    return helper.make_model(chain, opset_imports=[helper.make_opsetid("", 21),
                                                   helper.make_opsetid("com.microsoft", 1)]).SerializeToString()


def exactness(moe: NativeMoE, rng: np.random.Generator) -> float:
    """Largest relative error of the native GEMV against decode_mxfp4(weights) @ x in float64, over 4 experts."""
    from gptoss.quant.mxfp4 import decode_mxfp4

    worst = 0.0
    for e in range(4):
        x = rng.standard_normal(HIDDEN).astype(np.float32)
        ref = decode_mxfp4(moe.w1[e], moe.s1[e]).astype(np.float64) @ x.astype(np.float64)
        got = moe.gemv(moe.w1[e], moe.s1[e], x)
        worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()))
    return worst


def kernel_rates(native: list[NativeMoE], rng: np.random.Generator, calls: int = 10) -> dict:
    """The GEMV alone, in GB/s of codes and scales: `hot`, one gate/up matrix (8.7 MB) again and again, so it stays
    in the CPU's caches (the arithmetic's ceiling); `stream`, every layer's gate/up matrices back to back (the
    kernel's rate from memory)."""
    x = rng.standard_normal(HIDDEN).astype(np.float32)
    moe = native[0]

    def median_s(run) -> float:
        run()
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    one = moe.w1[0].nbytes + moe.s1[0].nbytes
    hot = median_s(lambda: moe.gemv(moe.w1[0], moe.s1[0], x))
    flat = [(m.w1.reshape(-1, HIDDEN // 32, 16), m.s1.reshape(-1, HIDDEN // 32)) for m in native]
    stream = median_s(lambda: [moe.gemv(w, s, x) for w, s in flat])
    total = sum(w.nbytes + s.nbytes for w, s in flat)
    return {"gemv_hot_gbs": one / hot / 1e9, "gemv_stream_gbs": total / stream / 1e9}


def expert_bytes() -> int:
    return (2 * INTER * HIDDEN + HIDDEN * INTER) // 2 * 33 // 32        # codes + one scale byte per 32


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--layers", type=int, default=3, help="layers of experts used in turn (423 MB each)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        dll = compile_kernel(Path(tmp))
        native = [NativeMoE(dll, rng, args.threads) for _ in range(args.layers)]
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
        qmoe = ort.InferenceSession(chained_qmoe(rng, args.layers), so, providers=["CPUExecutionProvider"])
        calls = []
        for _ in range(args.calls):
            logits = rng.standard_normal((1, EXPERTS)).astype(np.float32)
            top = np.argsort(-logits[0])[:TOP_K]
            w = np.exp(logits[0, top] - logits[0, top].max())
            calls.append((rng.standard_normal((1, HIDDEN)).astype(np.float32), logits, top, (w / w.sum()).astype(np.float32)))
        def run_native(c):
            for layer in native:
                layer(c[0][0], c[2], c[3])

        sides = {"native": run_native,
                 "qmoe_fp4": lambda c: qmoe.run(None, {"x": c[0], "router_logits": c[1]})}
        times: dict[str, list[float]] = {s: [] for s in sides}
        bandwidth = []
        for r in range(args.rounds):
            bandwidth.append(memory_bandwidth_gbs(threads=args.threads))
            for side in (sides if r % 2 == 0 else reversed(list(sides))):
                run = sides[side]
                for c in calls[:2]:
                    run(c)
                for c in calls:
                    t = time.perf_counter()
                    run(c)
                    times[side].append((time.perf_counter() - t) / args.layers)
        error = exactness(native[0], rng)
        rates = kernel_rates(native, rng)
    bw = statistics.median(bandwidth)
    result = {"threads": args.threads, "rounds": args.rounds, "calls": args.calls, "layers": args.layers,
              "read_bandwidth_gbs": bw, "bandwidth_min_max": [min(bandwidth), max(bandwidth)],
              "native_max_relative_error_vs_float64": error, **rates}
    for side, t in times.items():
        ms = [1e3 * v for v in t]
        med = statistics.median(ms)
        result[side] = {"ms_median": med, "ms_min": min(ms), "ms_max": max(ms),
                        "gbs": TOP_K * expert_bytes() / med / 1e6, "of_bandwidth": TOP_K * expert_bytes() / med / 1e6 / bw}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
