"""Batched decode throughput: aggregate decode tokens/s of B sequences advanced together (Engine.decode_batch over B
slots of one kv.SlotPool, one graph call per step), at B = 1, 2, 4, 8, on one bundle. Prints one JSON object.

    python bench/batched_decode.py BUNDLE [--batches 1 2 4 8] [--context 1024] [--steps 32] [--warmup 4]
                                          [--rounds 3] [--threads 2] [--seed 0] [--fill synthetic|prefill]
                                          [--json out.json]

Per round and B: a fresh pool of B slots, each holding about `context` positions (slot b: context + b, so the
lengths differ as a server's do), then `warmup` untimed steps and `steps` timed ones; each step is one
decode_batch call of B tokens and the greedy pick of each sequence's next token (what a server's round does
besides sampling). `--fill synthetic` (default) writes seeded random keys and values straight into each slot
(a decode step costs the same whatever the cached values are; a 1k prefill of 8 sequences on the full 20b would
take minutes); `--fill prefill` feeds seeded random ordinary-text ids through the model instead.

    aggregate tok/s   B * steps / the timed steps' wall time
    step ms           wall time of one batched step (B tokens)
    speedup           median aggregate tok/s / median aggregate tok/s at B = 1

Rounds alternate the order of the batch sizes (ascending, then descending, ...); per B the median, min and max
over the rounds (bench/stats.py) with every round's value. Measure on a quiet machine: the lead runs it on the
full-width bundles; the tiny bundle only checks that it runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stats import summarize  # noqa: E402  (stdlib only)

FILLS = ("synthetic", "prefill")


def fill_pool(model, batch: int, context: int, fill: str, seed: int):
    """A pool of `batch` slots, slot b holding context + b positions; returns (pool, first tokens)."""
    pool = model.engine.new_pool(batch, capacity=context + batch + 64)
    rng = np.random.default_rng(seed)
    tokens = []
    for b, slot in enumerate(pool.slots):
        if fill == "synthetic":
            slot.fill_random(context + b, seed=seed + b)
            tokens.append(int(rng.integers(1000, min(model.vocab_size, 199998))))
        else:
            ids = rng.integers(1000, min(model.vocab_size, 199998), context + b).tolist()
            tokens.append(int(np.argmax(model.engine.prefill(slot, ids))))
    return pool, tokens


def one_round(model, batch: int, args, seed: int) -> dict:
    pool, tokens = fill_pool(model, batch, args.context, args.fill, seed)
    engine = model.engine
    for _ in range(args.warmup):
        tokens = engine.decode_batch(pool.slots, tokens).argmax(axis=1).tolist()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        tokens = engine.decode_batch(pool.slots, tokens).argmax(axis=1).tolist()
        times.append(time.perf_counter() - t0)
    total = sum(times)
    return {"tok_s": batch * args.steps / total, "step_ms": 1000 * float(np.median(times)),
            "pool_bytes": pool.nbytes}


def measure(args) -> dict:
    from gptoss.runtime import Model

    t0 = time.perf_counter()
    model = Model.load(args.bundle, threads=args.threads,
                       max_context=args.context + max(args.batches) + args.warmup + args.steps + 2)
    load_s = time.perf_counter() - t0
    if not model.engine.batches:
        raise SystemExit(f"{args.bundle}: this bundle's engine cannot batch decode steps (a dynamic-shape bundle "
                         f"with a shared KV cache on the host can: the cpu target)")
    per_batch: dict[int, list[dict]] = {b: [] for b in args.batches}
    for r in range(args.rounds):
        order = args.batches if r % 2 == 0 else list(reversed(args.batches))
        for b in order:
            per_batch[b].append(one_round(model, b, args, args.seed + 1000 * r))
            print(f"round {r + 1}/{args.rounds} B={b}: {per_batch[b][-1]['tok_s']:.2f} tok/s", file=sys.stderr)
    results = {}
    for b, runs in per_batch.items():
        results[str(b)] = {"tok_s": summarize([x["tok_s"] for x in runs], True),
                           "step_ms": summarize([x["step_ms"] for x in runs], False),
                           "pool_bytes": runs[0]["pool_bytes"]}
    base = results.get("1")
    for row in results.values():
        row["speedup"] = row["tok_s"]["median"] / base["tok_s"]["median"] if base else None
    m = model.manifest
    return {"bundle": str(args.bundle), "target": m.target.name, "layers": int(m.model["num_hidden_layers"]),
            "hidden_size": int(m.model["hidden_size"]), "kv_dtype": m.kv.dtype, "threads": args.threads,
            "context": args.context, "steps": args.steps, "warmup": args.warmup, "rounds": args.rounds,
            "fill": args.fill, "seed": args.seed, "load_s": load_s, "provider": model.provider,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
            "batches": results}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", type=Path)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--warmup", type=int, default=4)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fill", choices=FILLS, default="synthetic")
    p.add_argument("--json", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    for name in ("context", "steps", "rounds", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1")
    if args.warmup < 0 or min(args.batches) < 1:
        p.error("--warmup must be >= 0 and every --batches value >= 1")
    args.batches = sorted(set(args.batches))
    out = json.dumps(measure(args), indent=2)
    print(out)
    if args.json is not None:
        args.json.write_text(out + "\n")


if __name__ == "__main__":
    main()
