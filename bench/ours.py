"""Our side of the benchmark: a gptoss bundle run by gptoss.runtime, measured exactly as bench/peer.py
measures onnxruntime-genai (same prompt ids, same phases, same peak-RSS accounting).

    python bench/ours.py measure BUNDLE [--threads 2] [--prompts 128 512 2048] [--contexts 1024 8192]
                                        [--new-tokens 32] [--fill prefill|synthetic]
                                        [--session-option session.intra_op.allow_spinning=0 ...]
                                        [--no-prefill-reserve]

Prints one JSON object on stdout. Phases:
  load     Model.load (session creation; ORT memory-maps model.weights)
  prompt   N ids prefilled (logits of the last position only), then the first greedy token: TTFT
  context  C ids in the cache, then M greedy decode steps: decode tok/s. `--fill prefill` feeds the C ids
           through the model (as the peer does); `--fill synthetic` writes C positions of random keys and
           values straight into the cache (a decode step costs the same whatever the cached values are),
           which makes 8k and 32k contexts measurable on the full 20b in minutes instead of hours.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer import dir_bytes, log, prompt_ids, reset_peak, vm_hwm_bytes, vm_rss_bytes  # noqa: E402  (stdlib only)


class Ours:
    def __init__(self, bundle: Path, threads: int, session_options: dict | None = None):
        from gptoss.runtime import Model

        reset_peak()
        t0 = time.perf_counter()
        self.model = Model.load(bundle, threads=threads, max_context=131072, session_options=session_options)
        self.load_s = time.perf_counter() - t0
        self.load_peak_rss_bytes = vm_hwm_bytes()
        self.rss_after_load_bytes = vm_rss_bytes()

    def prompt(self, n: int, seed: int) -> dict:
        reset_peak()
        m = self.model
        cache = m.new_cache(n + 1)
        ids = prompt_ids(n, seed).tolist()
        t0 = time.perf_counter()
        logits = m.engine.prefill(cache, ids)
        prefill_s = time.perf_counter() - t0
        int(np.argmax(logits))                       # the first greedy token
        ttft = time.perf_counter() - t0
        return {"tokens": n, "prefill_chunk": m.prefill_chunk, "prefill_s": prefill_s, "prefill_tok_s": n / prefill_s,
                "ttft_s": ttft, "peak_rss_bytes": vm_hwm_bytes()}

    def decode(self, context: int, new_tokens: int, seed: int, fill: str) -> dict:
        reset_peak()
        m = self.model
        cache = m.new_cache(context + new_tokens + 1)
        t0 = time.perf_counter()
        if fill == "prefill":
            logits = m.engine.prefill(cache, prompt_ids(context, seed).tolist())
        else:
            cache.fill_random(context, seed)
            logits = m.engine.prefill(cache, prompt_ids(1, seed).tolist())
        prefill_s = time.perf_counter() - t0
        token = int(np.argmax(logits))
        buf = m.engine.logits_buffer()
        steps, tokens = [], [token]
        for _ in range(new_tokens):
            t1 = time.perf_counter()
            token = int(np.argmax(m.engine.decode(cache, token, buf)))
            steps.append(time.perf_counter() - t1)
            tokens.append(token)
        steps_sorted = sorted(steps)
        return {"context": context, "fill": fill, "new_tokens": new_tokens, "prefill_s": prefill_s,
                "prefill_tok_s": (context if fill == "prefill" else 1) / prefill_s,
                "decode_tok_s": new_tokens / sum(steps), "decode_ms_median": 1e3 * steps_sorted[len(steps) // 2],
                "decode_ms_max": 1e3 * steps_sorted[-1], "peak_rss_bytes": vm_hwm_bytes(), "first_tokens": tokens[:8]}

    def warmup(self) -> float:
        t0 = time.perf_counter()
        self.decode(32, 4, seed=1, fill="prefill")
        return time.perf_counter() - t0


def measure(bundle: Path, threads: int = 2, prompts=(128, 512, 2048), contexts=(1024, 8192), new_tokens: int = 32,
            seed: int = 0, fill: str = "prefill", warmup: bool = True, session_options: dict | None = None) -> dict:
    ours = Ours(bundle, threads, session_options)
    log(f"loaded in {ours.load_s:.2f} s, RSS {ours.rss_after_load_bytes / 2**30:.2f} GiB")
    manifest = ours.model.manifest
    result = {"bundle": str(bundle), "threads": threads, "session_options": session_options or {},
              "model_bytes": dir_bytes(bundle),
              "num_hidden_layers": manifest.num_layers, "quant": manifest.quant,
              "load_s": ours.load_s, "load_peak_rss_bytes": ours.load_peak_rss_bytes,
              "rss_after_load_bytes": ours.rss_after_load_bytes, "warmup_s": ours.warmup() if warmup else None,
              "prompts": [], "contexts": [], "loadavg_start": os.getloadavg()}
    for n in sorted(prompts):
        result["prompts"].append(ours.prompt(n, seed))
        log(f"prompt {n}: {json.dumps(result['prompts'][-1])}")
    for c in sorted(contexts):
        result["contexts"].append(ours.decode(c, new_tokens, seed, fill))
        log(f"context {c}: {json.dumps(result['contexts'][-1])}")
    result["loadavg_end"] = os.getloadavg()
    result["peak_rss_bytes"] = max([ours.load_peak_rss_bytes]
                                   + [p["peak_rss_bytes"] for p in result["prompts"] + result["contexts"]])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure")
    m.add_argument("bundle", type=Path)
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--prompts", type=int, nargs="*", default=[128, 512, 2048])
    m.add_argument("--contexts", type=int, nargs="*", default=[1024, 8192])
    m.add_argument("--new-tokens", type=int, default=32)
    m.add_argument("--fill", choices=["prefill", "synthetic"], default="prefill")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--no-warmup", action="store_true")
    m.add_argument("--session-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an ONNX Runtime session option over the bundle's, e.g. session.intra_op.allow_spinning=0")
    m.add_argument("--no-prefill-reserve", action="store_true",
                   help="the runtime before prompts reserved their rows: full layers grow chunk by chunk during a "
                        "prefill (the baseline of docs/performance.md's comparison)")
    args = parser.parse_args(argv)
    options = dict(kv.split("=", 1) for kv in args.session_option)
    if args.no_prefill_reserve:
        from gptoss.runtime.kv.shared import SharedCache
        SharedCache.reserve = lambda self, length: None
    result = measure(args.bundle, args.threads, args.prompts, args.contexts, args.new_tokens, args.seed, args.fill,
                     warmup=not args.no_warmup, session_options=options)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
