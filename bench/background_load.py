"""Decode speed with one CPU-bound background process, ours against the peers: how much each side loses.

    python bench/background_load.py [--work /work/bigbench] [--layers 2] [--rounds 3] [--context 1024]
                                    [--peer-python /work/peer-venv/bin/python] [--llamacpp /work/llama-venv/bin/python]
                                    [--markdown docs/performance.md]

On the full-width slice of --layers layers (the bundles bench/benchmarks.py leaves in --work), each side decodes
--new-tokens greedy tokens after a --context-token prompt, in a fresh process, `--rounds` times idle and `--rounds`
times beside one background process that spins a core (`while True: pass`, as a busy neighbour on a 2-vCPU VM
would). Sides and conditions alternate round by round. Sides: ours with the bundle's session options (ONNX Runtime
spins its intra-op threads between ops), ours with spinning off (`session.intra_op.allow_spinning=0`), the peer
(onnxruntime-genai), and llama.cpp when --llamacpp is given. Per side: the median decode ms per token idle and busy,
their spread (min-max), and the slowdown (busy median / idle median).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats import summarize  # noqa: E402

BENCH = Path(__file__).resolve().parent
NO_SPIN = "session.intra_op.allow_spinning=0"


def sides(args) -> dict[str, list]:
    ours = [sys.executable, BENCH / "ours.py", "measure", args.work / f"ours20b_L{args.layers}"]
    out = {"ours": ours, "ours, no spinning": [*ours, "--session-option", NO_SPIN]}
    if Path(args.peer_python).exists():
        out["onnxruntime-genai"] = [args.peer_python, BENCH / "peer.py", "measure", args.work / f"peer20b_L{args.layers}"]
    if args.llamacpp:
        gguf = args.work / "gguf" / f"ck20b_L{args.layers}.q8_0.gguf"
        out["llama.cpp"] = [args.llamacpp, BENCH / "llamacpp.py", "measure", gguf]
    return out


def decode_ms(cmd: list, args) -> float:
    """One fresh process: the median ms per decode step at --context."""
    full = [str(c) for c in cmd] + ["--prompts", "--contexts", str(args.context), "--new-tokens", str(args.new_tokens)]
    out = subprocess.run(full, check=True, capture_output=True, text=True)
    return json.loads(out.stdout)["contexts"][0]["decode_ms_median"]


def hog() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(args) -> dict:
    results = {name: {"idle": [], "busy": []} for name in sides(args)}
    for rnd in range(args.rounds):
        conditions = ("idle", "busy") if rnd % 2 == 0 else ("busy", "idle")
        for condition in conditions:
            for name, cmd in sides(args).items():
                neighbour = hog() if condition == "busy" else None
                try:
                    time.sleep(0.5 if neighbour else 0)
                    ms = decode_ms(cmd, args)
                finally:
                    if neighbour:
                        neighbour.kill()
                        neighbour.wait()
                results[name][condition].append(ms)
                print(f"[background] round {rnd} {condition:4} {name}: {ms:.1f} ms/token", file=sys.stderr, flush=True)
    return results


def summary(results: dict) -> dict:
    out = {}
    for name, r in results.items():
        idle, busy = summarize(r["idle"], False), summarize(r["busy"], False)
        out[name] = {"idle": idle, "busy": busy, "slowdown": busy["median"] / idle["median"]}
    return out


def to_markdown(s: dict, args, command: str) -> str:
    lines = [f"### Decode beside one CPU-bound process ({args.layers}-layer full-width slice, {args.context} tokens "
             f"of context, {args.rounds} rounds)", "", f"`{command}` ({time.strftime('%Y-%m-%d')})", "",
             "| side | idle ms/token: median (min-max) | busy ms/token: median (min-max) | slowdown |",
             "|---|---|---|---|"]
    for name, r in s.items():
        i, b = r["idle"], r["busy"]
        lines.append(f"| {name} | {i['median']:.1f} ({i['min']:.1f}-{i['max']:.1f}) | {b['median']:.1f} "
                     f"({b['min']:.1f}-{b['max']:.1f}) | {r['slowdown']:.2f}x |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/work/bigbench"))
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--peer-python", default="/work/peer-venv/bin/python")
    ap.add_argument("--llamacpp", default=None, metavar="PYTHON")
    ap.add_argument("--markdown", type=Path, default=None, help="append the table to this file")
    args = ap.parse_args()
    command = "python bench/background_load.py " + " ".join(sys.argv[1:])
    results = measure(args)
    s = summary(results)
    print(json.dumps({"command": command, "runs": results, "summary": s}, indent=1))
    if args.markdown:
        with args.markdown.open("a") as f:
            f.write("\n" + to_markdown(s, args, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
