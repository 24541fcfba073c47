"""The cost of the standard-op sparse MoE (what `dml` and `coreml` run, having no MoE kernel) against ONNX Runtime's
QMoE, both on the CPU provider, on a full-width gpt-oss-20b slice. Prints one JSON document.

    python bench/sparse_moe.py CKPT_SLICE [--work DIR] [--rounds 3] [--out FILE]

Two bundles from the same checkpoint, differing in the MoE only: the `cpu` target (QMoE fp4, exact MXFP4) and the
`cpu` target with the MoE left as the portable graph's sparse standard-op body (each token gathers its top-4
experts' MXFP4 rows, unpacks them with bitwise ops and a lookup, and multiplies; `dml`'s MoE exactly). Each round
runs bench/ours.py in a fresh process for each side, alternating which goes first: a 128-token prompt and 16 decode
steps at a 1024-token context. Peak RSS is the process's high-water mark: a dense fp32 copy of one layer's 32
experts would add 3.2 GB to it (reported beside).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats import summarize  # noqa: E402

HERE = Path(__file__).resolve().parent


def sparse_cpu_target():
    from gptoss.targets.passes.moe import MoeToQMoE
    from gptoss.targets.registry import TARGETS

    cpu = TARGETS["cpu"]
    return dataclasses.replace(cpu, name="cpu-sparse-moe", passes=tuple(p for p in cpu.passes
                                                                        if not isinstance(p, MoeToQMoE)),
                               keeps=frozenset({*cpu.keeps, "MoE"}),
                               ops=tuple(op for op in cpu.ops if op != "com.microsoft.QMoE"))


def dense_expert_bytes(ckpt: Path) -> int:
    """Bytes of one layer's experts as a dense fp32 tensor: what a densifying MoE would hold."""
    config = json.loads((ckpt / "config.json").read_text())
    e, h, i = config["num_local_experts"], config["hidden_size"], config["intermediate_size"]
    return e * (h * 2 * i + i * h) * 4


def measure(bundle: Path) -> dict:
    out = subprocess.run([sys.executable, str(HERE / "ours.py"), "measure", str(bundle), "--prompts", "128",
                          "--contexts", "1024", "--new-tokens", "16"], check=True, capture_output=True, text=True)
    r = json.loads(out.stdout)
    return {"prefill_tok_s": r["prompts"][0]["prefill_tok_s"], "decode_tok_s": r["contexts"][0]["decode_tok_s"],
            "peak_rss_bytes": r["peak_rss_bytes"], "first_tokens": r["contexts"][0]["first_tokens"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sparse_moe"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from gptoss.compile.pipeline import export_bundle

    bundles = {"qmoe": export_bundle(args.checkpoint, args.work / "qmoe", target="cpu", force=True),
               "sparse_ops": export_bundle(args.checkpoint, args.work / "sparse", target=sparse_cpu_target(),
                                           force=True)}
    runs: dict[str, list[dict]] = {side: [] for side in bundles}
    for k in range(args.rounds):
        for side in (("qmoe", "sparse_ops") if k % 2 == 0 else ("sparse_ops", "qmoe")):
            runs[side].append(measure(bundles[side]))
            print(f"round {k} {side}: {runs[side][-1]}", file=sys.stderr)
    result = {"checkpoint": str(args.checkpoint), "rounds": args.rounds,
              "dense_experts_fp32_bytes_per_layer": dense_expert_bytes(args.checkpoint),
              "same_greedy_tokens": all(a["first_tokens"] == b["first_tokens"]
                                        for a, b in zip(runs["qmoe"], runs["sparse_ops"])),
              **{side: {metric: summarize([r[metric] for r in rs], metric != "peak_rss_bytes")
                        for metric in ("prefill_tok_s", "decode_tok_s", "peak_rss_bytes")}
                 for side, rs in runs.items()}}
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
