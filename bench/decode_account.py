"""Where one decode step's milliseconds go, at a given context: runtime wall, ONNX Runtime's run, kernels per op type,
the gaps between kernels, and the Python around the call.

    python bench/decode_account.py BUNDLE [--context 1024] [--steps 16] [--threads 2]
                                          [--session-option session.intra_op.allow_spinning=0 ...] [--markdown F]

Two phases in one process, one after the other (never both sessions at once: a 20b session holds ~12 GB):
  1. the runtime: Model.load, `--context` positions in the cache (random keys and values written by
     cache.fill_random, then a real 128-token prefill, which pages in every expert), then `--steps` greedy steps through Engine.decode; per step its wall time (what an app sees)
     and the wall of the InferenceSession call inside it (run_with_iobinding), so Python per step = the difference;
  2. ONNX Runtime's profiler on the same graph file, fed the same shapes (one token at position `--context` over
     buffers of the cache's rows, bound as the runtime binds them: past and present one buffer), `--steps` calls after two warm-ups: per call `model_run` (the session's own time),
     the kernels summed per op type, and the rest of model_run (gaps: thread hand-offs, waits and spinning between
     kernels, allocation, the executor's bookkeeping).
Prints JSON, and a markdown table with --markdown (appended).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np


WARM_PREFILL = 128


def runtime_phase(bundle: Path, context: int, steps: int, threads: int, options: dict) -> dict:
    """Wall per Engine.decode step, and of the session call inside it."""
    from gptoss.runtime import Model

    model = Model.load(bundle, threads=threads, max_context=max(context + steps + 8, 4096), session_options=options)
    cache = model.new_cache(context + steps + 2)
    warm = min(WARM_PREFILL, context)
    cache.fill_random(context - warm, 0)
    engine = model.engine
    # the last `warm` positions are a real prefill: its tokens route to (nearly) every expert, so the timed steps
    # find the weights in memory rather than paging them in
    token = int(np.argmax(engine.prefill(cache, list(range(1000, 1000 + warm)))))
    buf = engine.logits_buffer()
    session_s = [0.0]                               # the session calls' wall in the current step
    for parts in engine.parts.values():             # time each InferenceSession call a step makes
        for part in parts:
            real = part.session.run_with_iobinding

            def timed(binding, *a, _real=real, **k):
                t0 = time.perf_counter()
                out = _real(binding, *a, **k)
                session_s[0] += time.perf_counter() - t0
                return out
            part.session.run_with_iobinding = timed
    for _ in range(2):
        token = int(np.argmax(engine.decode(cache, token, buf)))
    wall, per_step_session = [], []
    for _ in range(steps):
        session_s[0] = 0.0
        t0 = time.perf_counter()
        token = int(np.argmax(engine.decode(cache, token, buf)))
        wall.append(time.perf_counter() - t0)
        per_step_session.append(session_s[0])
    return {"step_ms": 1e3 * statistics.median(wall), "session_ms": 1e3 * statistics.median(per_step_session),
            "step_ms_all": [round(1e3 * w, 2) for w in wall]}


def profiler_phase(bundle: Path, context: int, steps: int, threads: int, options: dict) -> dict:
    """ORT's profile of `steps` decode-shaped calls: model_run, kernels per op type, and the gaps."""
    import onnxruntime as ort

    from gptoss.bundle import load_manifest, names
    from gptoss.runtime.session import session_options

    manifest = load_manifest(bundle)
    so = session_options(manifest, threads, options)
    so.enable_profiling = True
    (graph,) = manifest.graph_paths("main")
    session = ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])
    feeds = decode_feeds(manifest, context, names)          # bound by pointer: kept alive for every call
    binding = bound_like_the_runtime(session, manifest, feeds)
    for _ in range(2 + steps):
        session.run_with_iobinding(binding)
    path = session.end_profiling()
    events = json.loads(Path(path).read_text())
    os.remove(path)
    runs = [e for e in events if e.get("cat") == "Session" and e["name"] == "model_run"][-steps:]
    per_op = kernel_time_per_op(events, runs[0]["ts"])
    run_ms = statistics.mean(r["dur"] for r in runs) / 1e3        # a mean, as the kernels are summed
    kernels = {op: d / 1e3 / steps for op, d in per_op.most_common()}
    return {"model_run_ms": run_ms, "kernels_ms": kernels, "kernel_total_ms": sum(kernels.values()),
            "gaps_ms": run_ms - sum(kernels.values())}


CONTROL_FLOW = ("If", "Loop", "Scan")


def kernel_time_per_op(events: list, start: int) -> collections.Counter:
    """Kernel microseconds per op type in an ORT profile, from `start` on. A control-flow node's event spans the
    kernels of the branch it ran, which the profile lists as nodes of their own; it keeps only what is its own (its
    span minus theirs), so that no microsecond is counted twice."""
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start]
    per_op: collections.Counter = collections.Counter()
    for e in kernels:
        per_op[e["args"]["op_name"]] += e["dur"]
    for e in kernels:
        if e["args"]["op_name"] in CONTROL_FLOW:
            end = e["ts"] + e["dur"]
            inner = sum(k["dur"] for k in kernels if k is not e and k["tid"] == e["tid"] and e["ts"] <= k["ts"] < end)
            per_op[e["args"]["op_name"]] -= inner
    return per_op


def bound_like_the_runtime(session, manifest, feeds: dict):
    """An IOBinding as the runtime makes one: in a "shared" cache each layer's past and present are one buffer (the
    cpu graph's ScatterND then writes in place; with separate outputs it would copy every buffer each call)."""
    from gptoss.bundle import names
    from gptoss.runtime.kv.storage import bind_array

    binding = session.io_binding()
    for name, value in feeds.items():
        bind_array(binding.bind_input, name, value)
    past_of = {} if manifest.kv.mode != "shared" else {
        present: past for i in range(manifest.kv.num_layers)
        for past, present in zip(names.kv_names(i)[:2], names.kv_names(i)[2:])}
    for out in session.get_outputs():
        if out.name in past_of:
            bind_array(binding.bind_output, out.name, feeds[past_of[out.name]])
        else:
            binding.bind_output(out.name, "cpu")
    return binding


def decode_feeds(manifest, context: int, names) -> dict:
    """One token at position `context` over shared buffers holding `context` rows (values: zeros; the time of a step
    does not depend on them)."""
    kv = manifest.kv
    f = {names.INPUT_IDS: np.array([[1000]], np.int64), names.POSITION_IDS: np.array([[context]], np.int64)}
    if manifest.logits == "selectable":
        f[names.LOGITS_FROM] = np.array([0], np.int64)
    for i in range(kv.num_layers):
        rows = kv.capacity[i] or context + 1
        for name in (names.past_key(i), names.past_value(i)):
            f[name] = np.zeros((1, kv.num_kv_heads, rows, kv.head_dim), np.dtype(kv.dtype))
    return f


def to_markdown(r: dict, command: str) -> str:
    rt, pr = r["runtime"], r["profile"]
    lines = [f"`{command}` ({time.strftime('%Y-%m-%d')})", "", "| part of one decode step | ms | share |", "|---|---|---|"]
    total = rt["step_ms"]

    def row(name, ms):
        lines.append(f"| {name} | {ms:.1f} | {100 * ms / total:.0f}% |")
    for op, ms in pr["kernels_ms"].items():
        if ms >= 0.1:
            row(f"kernels: {op}", ms)
    row("gaps between kernels (model_run - kernels)", pr["gaps_ms"])
    row("outside ORT's run: binding, Python (step - session call)", rt["step_ms"] - rt["session_ms"])
    row("session call vs profiled model_run (profiler, run overhead)", rt["session_ms"] - pr["model_run_ms"])
    lines.append(f"| **one decode step (Engine.decode, median of {len(rt['step_ms_all'])})** | **{total:.1f}** | 100% |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--session-option", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--markdown", type=Path, default=None)
    args = ap.parse_args()
    options = dict(kv.split("=", 1) for kv in args.session_option)
    command = "python bench/decode_account.py " + " ".join(sys.argv[1:])
    result = {"command": command, "context": args.context, "session_options": options,
              "runtime": runtime_phase(args.bundle, args.context, args.steps, args.threads, options)}
    result["profile"] = profiler_phase(args.bundle, args.context, args.steps, args.threads, options)
    print(json.dumps(result, indent=1))
    if args.markdown:
        with args.markdown.open("a") as f:
            f.write("\n" + to_markdown(result, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
