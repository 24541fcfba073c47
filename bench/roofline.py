"""Roofline of the two kernels that hold the CPU's decode and prefill (issue 13, items 2 and 3): how close ONNX
Runtime's QMoE (MXFP4) and MatMulNBits (int8) run to what this machine can do at all.

    python bench/roofline.py --threads 2 --rounds 3 --json /tmp/roofline.json

Each measurement is one gpt-oss-20b-sized node alone in a session, random weights (speed does not depend on the
values), `--rounds` rounds alternating the measurements, median and spread reported:

- **read bandwidth**: numpy sum over 2 GiB on the same threads (benchmarks.py's floor uses the same probe);
- **fp32 GEMM rate**: ONNX Runtime's own MatMul (MLAS SGEMM, the routine a CPU kernel runs its float32 products
  on) on one expert's gate/up product for the tokens it gets in a prefill chunk: [T*k/E, 2880] x [2880, 5760];
- **QMoE fp4** (one layer: 32 experts, top-4) at 1 token (decode: bytes of the 4 experts read, GB/s) and at
  `--prefill` tokens (GFLOP/s, 2 flops per multiply-add of the active experts);
- **QMoE int8** on the same shapes: MXFP4 re-encoded losslessly to int8 (twice the bytes, over the 16 GB budget),
  to show what integer arithmetic would buy;
- **MatMulNBits int8 decode** on the unembedding's shape (201088 x 2880, accuracy level 4), GB/s, with blocks of
  32 values (the bundles') and any other `--unembedding-blocks` (fewer scale bytes per weight).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmarks import memory_bandwidth_gbs  # noqa: E402
from qmoe_micro import EXPERTS, HIDDEN, INTER, TOP_K, build as build_qmoe  # noqa: E402

VOCAB = 201088
EXPERT_MACS = HIDDEN * 2 * INTER + INTER * HIDDEN      # multiply-adds of one expert for one token


def session(model: bytes, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def median_ms(sess: ort.InferenceSession, feeds: list[dict], calls: int) -> float:
    for f in feeds[:2]:
        sess.run(None, f)
    times = []
    for n in range(calls):
        t = time.perf_counter()
        sess.run(None, feeds[n % len(feeds)])
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _one_node(node, inputs, output, inits) -> bytes:
    graph = helper.make_graph([node], "roofline", inputs, [output], inits)
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def sgemm_model(rng: np.random.Generator) -> bytes:
    w = rng.standard_normal((HIDDEN, 2 * INTER)).astype(np.float32)
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    return _one_node(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["M", HIDDEN])],
                     helper.make_tensor_value_info("y", TensorProto.FLOAT, ["M", 2 * INTER]),
                     [numpy_helper.from_array(w, "w")])


def unembedding_blocks(block: int) -> int:
    return -(-HIDDEN // block)                      # the last block padded


def unembedding_bytes(block: int) -> int:
    return VOCAB * unembedding_blocks(block) * (block + 4)     # int8 values and one fp32 scale per block


def unembedding_model(rng: np.random.Generator, block: int = 32) -> bytes:
    blocks = unembedding_blocks(block)
    q = rng.integers(0, 256, (VOCAB, blocks, block), dtype=np.uint8)
    s = rng.uniform(1e-3, 1e-2, (VOCAB * blocks,)).astype(np.float32)
    node = helper.make_node("MatMulNBits", ["x", "q", "s"], ["y"], domain="com.microsoft", K=HIDDEN, N=VOCAB,
                            bits=8, block_size=block, accuracy_level=4)
    return _one_node(node, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, HIDDEN])],
                     helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, VOCAB]),
                     [numpy_helper.from_array(q, "q"), numpy_helper.from_array(s, "s")])


def qmoe_feeds(rng, tokens: int, n: int = 4) -> list[dict]:
    return [{"x": rng.standard_normal((tokens, HIDDEN)).astype(np.float32),
             "router_logits": rng.standard_normal((tokens, EXPERTS)).astype(np.float32)} for _ in range(n)]


def expert_bytes(kind: str) -> float:
    """Bytes of one expert's weights and block scales (fp4: 1 byte per 32-value block scale; int8: fp32 scales)."""
    values = EXPERT_MACS
    return values / 2 + values / 32 if kind == "fp4" else values + values / 32 * 4


def measure(args) -> dict:
    rng = np.random.default_rng(0)
    rows_per_expert = args.prefill * TOP_K // EXPERTS
    sessions = {
        "sgemm": session(sgemm_model(rng), args.threads),
        "qmoe_fp4": session(build_qmoe("fp4", rng), args.threads),
        "qmoe_int8": session(build_qmoe("int8", rng, 4), args.threads),
        **{f"unembedding_b{b}": session(unembedding_model(rng, b), args.threads) for b in args.unembedding_blocks},
    }
    feeds = {
        "sgemm": [{"x": rng.standard_normal((rows_per_expert, HIDDEN)).astype(np.float32)}],
        "decode": qmoe_feeds(rng, 1, 8),
        "prefill": qmoe_feeds(rng, args.prefill, 2),
        "unembedding": [{"x": rng.standard_normal((1, HIDDEN)).astype(np.float32)}],
    }
    rounds: dict[str, list[float]] = {}

    def keep(name: str, value: float) -> None:
        rounds.setdefault(name, []).append(value)

    prefill_flops = 2 * args.prefill * TOP_K * EXPERT_MACS
    for r in range(args.rounds):
        print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
        keep("bandwidth_gbs", memory_bandwidth_gbs(threads=args.threads))
        ms = median_ms(sessions["sgemm"], feeds["sgemm"], args.calls)
        keep("sgemm_gflops", 2 * rows_per_expert * HIDDEN * 2 * INTER / ms / 1e6)
        for kind in ("fp4", "int8"):
            sess = sessions[f"qmoe_{kind}"]
            ms = median_ms(sess, feeds["decode"], args.calls)
            keep(f"qmoe_{kind}_decode_ms", ms)
            keep(f"qmoe_{kind}_decode_gbs", TOP_K * expert_bytes(kind) / ms / 1e6)
            ms = median_ms(sess, feeds["prefill"], max(3, args.calls // 10))
            keep(f"qmoe_{kind}_prefill_ms_per_token", ms / args.prefill)
            keep(f"qmoe_{kind}_prefill_gflops", prefill_flops / ms / 1e6)
        for b in args.unembedding_blocks:
            ms = median_ms(sessions[f"unembedding_b{b}"], feeds["unembedding"], args.calls)
            suffix = "" if b == 32 else f"_b{b}"
            keep(f"unembedding{suffix}_decode_ms", ms)
            keep(f"unembedding{suffix}_decode_gbs", unembedding_bytes(b) / ms / 1e6)
    summary = {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "rounds": v}
               for k, v in rounds.items()}
    return {"threads": args.threads, "prefill_tokens": args.prefill, "rows_per_expert": rows_per_expert,
            "onnxruntime": ort.__version__, "results": summary}


def report(res: dict) -> None:
    r = {k: v["median"] for k, v in res["results"].items()}
    spread = {k: (v["min"], v["max"]) for k, v in res["results"].items()}
    for k in r:
        print(f"{k:34s} {r[k]:10.2f}   ({spread[k][0]:.2f}-{spread[k][1]:.2f})")
    bw, sg = r["bandwidth_gbs"], r["sgemm_gflops"]
    print(f"QMoE fp4 decode streams at {r['qmoe_fp4_decode_gbs'] / bw:.0%} of the read bandwidth; "
          f"the int8 unembedding at {r['unembedding_decode_gbs'] / bw:.0%}")
    print(f"QMoE fp4 prefill computes at {r['qmoe_fp4_prefill_gflops'] / sg:.0%} of ORT's fp32 GEMM rate; "
          f"int8 (lossless re-encoding) at {r['qmoe_int8_prefill_gflops'] / sg:.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=30, help="calls per decode measurement (a tenth for prefill)")
    ap.add_argument("--prefill", type=int, default=512, help="tokens of the prefill measurement")
    ap.add_argument("--unembedding-blocks", type=int, nargs="+", default=[32],
                    help="block sizes of the int8 unembedding measured (32: the bundles')")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    args.unembedding_blocks = sorted(set(args.unembedding_blocks) | {32})
    res = measure(args)
    report(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
