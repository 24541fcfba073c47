"""`gptoss bench`: load time, prefill and decode throughput, time to first token, peak RSS.

The prompt is fixed, deterministic token ids (ordinary text tokens, no control tokens), and decoding is
greedy with no stop token, so every run does the same work.
"""

from __future__ import annotations

import resource
import sys
import time

import numpy as np


def peak_rss_mb() -> float:
    """This process's peak resident set size, MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def bench_prompt(n: int, vocab: int, seed: int = 0) -> list[int]:
    """n token ids drawn from the ordinary-text range of the vocabulary (o200k: below 199998)."""
    high = min(vocab, 199998)
    return np.random.default_rng(seed).integers(1000, high, size=n).tolist()


def run_bench(bundle, provider=None, threads=None, max_context=None, allow_fallback=False,
              prompt_tokens: int = 512, new_tokens: int = 128, repeat: int = 1, graph_capture: bool = False) -> dict:
    from .model import Model

    model = Model.load(bundle, provider=provider, threads=threads, max_context=max_context,
                       allow_fallback=allow_fallback, graph_capture=graph_capture)
    ids = bench_prompt(prompt_tokens, model.vocab_size)
    best = None
    for _ in range(repeat):
        cache = model.new_cache(prompt_tokens + new_tokens)
        t0 = time.perf_counter()
        logits = model.engine.prefill(cache, ids)
        t_prefill = time.perf_counter() - t0
        gen = model.generate(ids, max_new_tokens=new_tokens, temperature=0, stop_tokens=(), cache=cache)
        # The cache already holds the prompt and its logits: generate() re-uses them, so the first
        # event's time is the sampling of the first token.
        del logits
        t1 = time.perf_counter()
        first = None
        count = 0
        for _ in gen:
            count += 1
            if first is None:
                first = time.perf_counter()
        t_end = time.perf_counter()
        decode_s = t_end - first
        run = {
            "prefill_tok_s": prompt_tokens / t_prefill,
            "ttft_s": t_prefill + (first - t1),
            "decode_tok_s": (count - 1) / decode_s if count > 1 and decode_s > 0 else float("nan"),
        }
        if best is None or run["decode_tok_s"] > best["decode_tok_s"]:
            best = run
    return {
        "provider": model.provider, "threads": threads, "load_s": model.load_seconds,
        "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, **best, "peak_rss_mb": peak_rss_mb(),
        "target": model.manifest.target.name, "quant": model.manifest.quant,
    }
