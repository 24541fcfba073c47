"""What one benchmark round measures, and how the rounds are summed up: per metric the median (the headline), the
spread (min and max) and the best, with every round's value kept.

The project's rule: measure with nothing else running, alternate the sides, and report the median and the spread
as well as the best. A result that only shows up as a best-of-N is not a result.

Stdlib only: used by bench/benchmarks.py (measuring) and bench/report.py (writing docs/benchmarks.md).
"""

from __future__ import annotations

import statistics

PROMPTS = (128, 512, 2048)          # prompt lengths: time to first token, prefill tok/s
CONTEXTS = (1024, 8192, 32768)      # contexts: decode tok/s
SLICES = (1, 2, 3)                  # layers in the full-width slices measured beside the peer
FULL_LAYERS = 24                    # gpt-oss-20b
RSS_BUDGET_CONTEXT = 8192           # peak RSS is reported up to this context, and with everything


def summarize(values, higher_is_better: bool) -> dict | None:
    """{values, n, median, min, max, best} of one metric over the rounds (None values are skipped);
    None when no round has it."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    return {"values": vals, "n": len(vals), "median": statistics.median(vals), "min": min(vals), "max": max(vals),
            "best": max(vals) if higher_is_better else min(vals)}


def as_list(x) -> list:
    """A metric stored once (a number, as the old JSON has the cold loads) or per round (a list)."""
    if x is None:
        return []
    return list(x) if isinstance(x, (list, tuple)) else [x]


def ok_runs(runs: list) -> list[dict]:
    """The rounds that produced numbers (a failed round is {"ok": false, "error": ...})."""
    return [r for r in runs or [] if isinstance(r, dict) and r.get("prompts") is not None]


def aggregate(runs: list) -> dict:
    """All rounds of one side on one model (ours.py / peer.py `measure` JSON objects), per metric a summarize()
    dict; peak RSS is the max over the rounds, sizes are as measured. {} when no round produced numbers."""
    good = ok_runs(runs)
    if not good:
        return {}
    # Peak RSS over the phases up to 8k of context, the budget the issue sets (a 32k prefill adds its attention
    # scores on top: reported separately).
    phases = [x for r in good for x in r["prompts"]
              + [c for c in r["contexts"] if c["context"] <= RSS_BUDGET_CONTEXT]]
    out = {"rounds": len(good), "failed_rounds": len(runs) - len(good),
           "load_s": summarize([r.get("load_s") for r in good], False),
           "peak_rss_bytes": max([r["load_peak_rss_bytes"] for r in good] + [x["peak_rss_bytes"] for x in phases]),
           "peak_rss_all_bytes": max(r["peak_rss_bytes"] for r in good),
           "model_bytes": good[0]["model_bytes"], "prompts": {}, "contexts": {}}
    for n in sorted({p["tokens"] for r in good for p in r["prompts"]}):
        rows = [p for r in good for p in r["prompts"] if p["tokens"] == n]
        out["prompts"][n] = {"ttft_s": summarize([p["ttft_s"] for p in rows], False),
                             "prefill_tok_s": summarize([p["prefill_tok_s"] for p in rows], True)}
    for c in sorted({x["context"] for r in good for x in r["contexts"]}):
        tok_s = [x["decode_tok_s"] for r in good for x in r["contexts"] if x["context"] == c]
        out["contexts"][c] = {"decode_tok_s": summarize(tok_s, True),
                              "decode_ms": summarize([1e3 / t for t in tok_s if t], False)}
    return out


def is_summary(x) -> bool:
    return isinstance(x, dict) and "median" in x and "values" in x


def medians(d):
    """The same nesting as aggregate()'s result with each summary replaced by its median (other values as they
    are): what the per-layer extrapolation and the ratios work on."""
    if is_summary(d):
        return d["median"]
    if isinstance(d, dict):
        return {k: medians(v) for k, v in d.items()}
    return d
