"""docs/benchmarks.md and docs/benchmarks-decode.png from what bench/benchmarks.py measured (its benchmarks.json).

Every timed number is the median of the rounds, with the spread and the best beside it:
`median (min–max, best b)`, or `value (1 run)` for one measured once; the "gptoss advantage" column and the
24-layer extrapolation use the medians. Peak RSS is the max over the rounds; sizes are as measured.

The peers are sides of the JSON next to ours: `peer` (onnxruntime-genai, always a column) and `llamacpp` (llama.cpp,
a column only when the run measured it: `bench/benchmarks.py --llamacpp PYTHON`).
"""

from __future__ import annotations

from pathlib import Path

from stats import (
    CONTEXTS,
    PROMPTS,
    SLICES,
    aggregate,
    as_list,
    is_summary,
    medians,
    ok_runs,
    summarize,
)

PEER = "onnxruntime-genai"
LLAMACPP = "llama.cpp"
PEERS = {"peer": PEER, "llamacpp": LLAMACPP}       # side key in benchmarks.json -> its name, in column order


def peers_in(s: dict) -> list[str]:
    """The peers that get columns: onnxruntime-genai always (n/a where it did not run), llama.cpp when measured."""
    return ["peer"] + (["llamacpp"] if any(e.get("llamacpp_runs") for e in s.values()) else [])


def md_row(cells) -> str:
    """`| a | b |`; an empty cell is `| |`."""
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def table_head(peers: list[str], first: str = "metric") -> list[str]:
    """One peer: `| metric | gptoss | peer | gptoss advantage |`; more: a value column and an advantage column
    (`gptoss vs NAME`) per peer."""
    if len(peers) == 1:
        cols = [PEERS[peers[0]], "gptoss advantage"]
    else:
        cols = [PEERS[k] for k in peers] + [f"gptoss vs {PEERS[k]}" for k in peers]
    return [md_row([first, "gptoss", *cols]), "|" + "---|" * (2 + len(cols))]


# ------------------------------------------------------------------------------------- numbers
def fmt(x, unit="", digits=1):
    """A plain number (or a summary, via fmt_stat)."""
    if is_summary(x):
        return fmt_stat(x, unit, digits)
    return "n/a" if x is None else f"{x:.{digits}f}{unit}"


def fmt_stat(s: dict | None, unit="", digits=1) -> str:
    """`6.21 (6.02–6.30, best 6.30)`: the median, the spread over the rounds and the best; `6.21 (1 run)`."""
    if s is None:
        return "n/a"
    head = f"{s['median']:.{digits}f}{unit}"
    if s["n"] == 1:
        return f"{head} (1 run)"
    return f"{head} ({s['min']:.{digits}f}–{s['max']:.{digits}f}, best {s['best']:.{digits}f})"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def median_of(x):
    return x["median"] if is_summary(x) else x


def ratio(ours, peer, higher_is_better=True):
    """How many times better ours is, on the medians."""
    ours, peer = median_of(ours), median_of(peer)
    if ours is None or peer is None or not peer or not ours:
        return "n/a"
    return f"{(ours / peer if higher_is_better else peer / ours):.2f}x"


def _gib(x):
    return None if x is None else x / 2**30


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def cold_load(entry: dict, side: str) -> dict | None:
    """The cold loads of one side: a number in the old JSON (measured once), a list per round in the new."""
    return summarize(as_list(entry.get(f"{side}_cold_load_s")), False)


# ------------------------------------------------------------------------------------- header
def rounds_note(s: dict) -> str:
    runs = [e.get(k) or [] for e in s.values() for k in ("ours_runs", "peer_runs", "llamacpp_runs")]
    counts = "/".join(map(str, sorted({len(r) for r in runs if r}))) or "no"
    per_round_cold = any(isinstance(e.get("ours_cold_load_s"), list) for e in s.values())
    if "llamacpp" in peers_in(s):
        who = "the sides alternating in fresh processes (bench/ours.py, bench/peer.py, bench/llamacpp.py)"
    else:
        who = "ours and the peer's alternating in fresh processes (bench/ours.py, bench/peer.py)"
    return (f"{counts} rounds per side on each slice, {who}; the 32k context is decoded in the first round only; "
            "the cold loads "
            "(page cache dropped first) " + ("once per round, before that round's warm run." if per_round_cold
                                             else "once per side, after the rounds."))


def llamacpp_note(s: dict) -> list[str]:
    """What the llama.cpp side is, from its own runs' JSON (versions, CPU features, flash attention)."""
    runs = [r for e in s.values() for r in ok_runs(e.get("llamacpp_runs"))]
    if not runs:
        return []
    r = runs[0]
    fa = next((line for line in r.get("llama_log", []) if "flash_attn" in line), None)
    return [(f"llama.cpp is llama-cpp-python {r['versions'].get('llama-cpp-python')} (its vendored llama.cpp, "
             "compiled here with `GGML_NATIVE=ON` and AMX off, as bench/README.md says why), driven through its C API by bench/llamacpp.py: n_threads = "
             f"n_threads_batch = {r['threads']}, micro-batch {r.get('ubatch')}, flash attention "
             f"`{r.get('flash_attn')}`" + (f" (`{fa}`)" if fa else "") + ". It runs the GGUF its own converter "
             "(`convert_hf_to_gguf.py --outtype q8_0`) makes of the same checkpoint: the MXFP4 experts as they are, "
             "attention, embedding and output Q8_0 (int8, blocks of 32, fp16 scales), router, norms and sinks "
             f"F32. CPU features: `{r.get('system_info', '')}`."), ""]


def section_header(results: dict, s: dict, rendered_by: str | None) -> list[str]:
    m = results["machine"]
    regen = f"Regenerate: `{results['command']}` (about an hour; artifacts are kept in --work)."
    if rendered_by:
        regen += f" This page was written from that run's saved measurements by `{rendered_by}`."
    title = " and ".join(PEERS[k] for k in peers_in(s))
    return [f"# Benchmarks: gpt-oss-20b on a 2-core CPU, gptoss vs {title}", "", regen, "",
            (f"Machine: {m['cores']} cores ({m['cpu']}), {m['mem_gib']:.0f} GiB RAM, no GPU; every side runs with 2 "
            f"threads (ours and onnxruntime-genai: intra-op threads on onnxruntime 1.32.0). Memory read bandwidth (numpy sum over 2 GiB on 2 threads, best "
            f"of 5): **{results['bandwidth_gbs']:.1f} GB/s**."), "",
            ("Checkpoints are synthetic (random weights) in the published Hugging Face layout and shapes of "
            "gpt-oss-20b, so every byte moved and every FLOP is the real model's. The peer is "
            "onnxruntime-genai's own builder (`-p int4 -e cpu`) and runtime; ours is `gptoss-export export` (target "
            "cpu, default schemes) and `gptoss.runtime`. Prompts are the same random text-token ids on every side; "
            "decoding is greedy."), "", *llamacpp_note(s),
            "Each timed number is the **median** of the rounds, then the spread and the best: `median (min–max, "
            "best)`; `(1 run)` marks one measured once. The gptoss advantage is the ratio of the medians. Peak RSS "
            "is the highest of the rounds. " + rounds_note(s), ""]


# ------------------------------------------------------------------------------------- per-slice tables
def _rss_32k(a: dict):
    """Peak RSS with the 32k context, for a side that decoded it."""
    return _gib(a.get("peak_rss_all_bytes")) if 32768 in (a.get("contexts") or {}) else None


# (metric, its value in one side's aggregate() (plus "cold_load"), higher is better, digits)
SLICE_METRICS = [
    ("load, warm (s)", lambda a: _get(a, "load_s"), False, 2),
    ("load, cold page cache (s)", lambda a: a.get("cold_load"), False, 2),
    *[(f"time to first token, {n}-token prompt (s)", lambda a, n=n: _get(a, "prompts", n, "ttft_s"), False, 2)
      for n in PROMPTS],
    ("prefill tok/s (2048-token prompt)", lambda a: _get(a, "prompts", 2048, "prefill_tok_s"), True, 1),
    *[(f"decode tok/s at {c // 1024}k context", lambda a, c=c: _get(a, "contexts", c, "decode_tok_s"), True, 2)
      for c in CONTEXTS],
    ("peak RSS up to 8k context (GiB)", lambda a: _gib(a.get("peak_rss_bytes")), False, 2),
    ("peak RSS with the 32k context (GiB)", _rss_32k, False, 2),
    ("model on disk (GiB)", lambda a: _gib(a.get("model_bytes")), False, 2),
]


def table_rows(label: str, sides: dict, peers: list[str]) -> list[str]:
    """One slice's table. sides: side key -> its aggregate() with its cold loads under "cold_load"."""
    out = [f"#### {label}", "", *table_head(peers)]
    for name, value, hib, d in SLICE_METRICS:
        ov, pvs = value(sides["ours"]), [value(sides[k]) for k in peers]
        out.append(f"| {name} | {fmt(ov, '', d)} | " + " | ".join(fmt(pv, '', d) for pv in pvs) + " | "
                   + " | ".join(ratio(ov, pv, hib) for pv in pvs) + " |")
    return out + [""]


def slice_sides(entry: dict) -> dict:
    """side key -> aggregate() of its rounds on one slice, plus its cold loads (empty for a side that did not run)."""
    return {k: {**aggregate(entry.get(f"{k}_runs") or []), "cold_load": cold_load(entry, k)}
            for k in ("ours", *PEERS)}


def section_slices(s: dict, agg: dict) -> list[str]:
    names = [str(L) for L in s]
    lines = [f"## Full width, {', '.join(names[:-1])} and {names[-1]} layers, side by side" if len(names) > 1
             else f"## Full width, {names[0]} layer(s), side by side", ""]
    peers = peers_in(s)
    for L, sides in agg.items():
        lines += table_rows(f"{L}-layer slice", sides, peers)
        lines += failed_rounds(s[L])
    return lines


def failed_rounds(entry: dict) -> list[str]:
    """A line per side with rounds that produced no numbers (left out of the table above)."""
    out = []
    for key, name in (("ours_runs", "gptoss"), *((f"{k}_runs", v) for k, v in PEERS.items())):
        runs = entry.get(key) or []
        bad = len(runs) - len(ok_runs(runs))
        if bad:
            out.append(f"- {name}: {bad} of {plural(len(runs), 'round')} failed, left out of the table above "
                       "(benchmarks.json has the errors).")
    return out + [""] if out else []


# ------------------------------------------------------------------------------------- fidelity
def section_fidelity(s: dict) -> list[str]:
    fid = [(L, s[L]["fidelity"]) for L in s if (s[L].get("fidelity") or {}).get("ours")]
    if not fid:
        return []
    lines = ["## Fidelity against the fp32 reference (same 64-token prompt, every position)", "",
             "| slice | side | relative logit error | max abs diff | top-1 agreement |", "|---|---|---|---|---|"]
    for L, f in fid:
        for side, name in (("ours", "gptoss (MXFP4 experts exact, int8 dense, fp32 router)"),
                           ("peer", f"{PEER} (int4 everything)")):
            r = f[side]
            lines.append(f"| {L} layers | {name} | {r['relative_error']:.2e} | {r['max_abs_diff']:.3g} | "
                         f"{100 * r['top1_agreement']:.1f}% |")
    return lines + [""]


# ------------------------------------------------------------------------------------- per layer, 24 layers
def extrapolate(one: dict, two: dict, three: dict) -> dict:
    """24-layer estimates from the 1-, 2- and 3-layer slices (plain numbers: the medians). Layer 0 and 2 slide,
    layer 1 is full, so full = L2 - L1 and sliding = L3 - L2, and 24 layers = L1 + 11 sliding + 12 full."""
    def est(*keys):
        v1, v2, v3 = (_get(x, *keys) for x in (one, two, three))
        if None in (v1, v2, v3):
            return None
        return {"full": v2 - v1, "sliding": v3 - v2, "at24": v1 + 11 * (v3 - v2) + 12 * (v2 - v1)}
    out = {c: est("contexts", c, "decode_ms") for c in CONTEXTS}
    out["ttft"] = {n: est("prompts", n, "ttft_s") for n in PROMPTS}
    out["load"] = est("load_s")
    return out


def extrapolated_rows(eo: dict, eps: list[dict]) -> list[str]:
    """eo: our extrapolate(); eps: each peer's, in column order."""
    lines = []
    for c in CONTEXTS:
        o, ps = eo.get(c), [ep.get(c) for ep in eps]
        if o:
            lines.append(md_row([f"decode ms per full / sliding layer, {c // 1024}k context",
                                 f"{o['full']:.2f} / {o['sliding']:.2f}",
                                 *[f"{p['full']:.2f} / {p['sliding']:.2f}" if p else "n/a" for p in ps],
                                 *["" for _ in ps]]))
    for c in CONTEXTS:
        o, ps = eo.get(c), [ep.get(c) for ep in eps]
        if o:
            lines.append(md_row([f"**decode tok/s, 24 layers (extrapolated), {c // 1024}k context**",
                                 f"{1e3 / o['at24']:.2f}", *[f"{1e3 / p['at24']:.2f}" if p else "n/a" for p in ps],
                                 *[ratio(p['at24'], o['at24']) if p else "n/a" for p in ps]]))
    timed = [(f"time to first token, {n}-token prompt, 24 layers (extrapolated, s)", eo["ttft"].get(n),
              [ep["ttft"].get(n) for ep in eps]) for n in PROMPTS]
    timed.append(("load, warm, 24 layers (extrapolated, s)", eo.get("load"), [ep.get("load") for ep in eps]))
    for name, o, ps in timed:
        if o and any(ps):
            lines.append(md_row([name, f"{o['at24']:.1f}", *[f"{p['at24']:.1f}" if p else "n/a" for p in ps],
                                 *[ratio(o['at24'], p['at24'], False) if p else "n/a" for p in ps]]))
    return lines


def section_extrapolation(s: dict, eo: dict, eps: dict) -> list[str]:
    """eps: peer key -> its extrapolate(), for the peers with columns."""
    lines = ["## Per layer, and extrapolated to 24 layers", "",
             ("On a small slice the unembedding (201088 x 2880) dominates and hides what the layers cost. Layers "
             "0 and 2 use the sliding window and layer 1 attends to everything, so the 2-layer minus 1-layer "
             "slice is one full-attention layer and 3 minus 2 one sliding layer; gpt-oss-20b = 1-layer slice "
             "+ 11 sliding + 12 full layers. Computed from each slice's medians."), "",
             *table_head(list(eps), first=""), *extrapolated_rows(eo, list(eps.values())), ""]
    for L in SLICES:
        b = s[L].get("peer_build") or {}
        if b.get("peak_rss_bytes"):
            lines.append(f"- Peer builder, {L} layer(s): {b.get('wall_s', 0):.0f} s, peak RSS "
                         f"{b['peak_rss_bytes'] / 2**30:.1f} GiB.")
    for L in SLICES:
        b = s[L].get("llamacpp_convert") or {}
        if b.get("peak_rss_bytes"):
            lines.append(f"- llama.cpp converter, {L} layer(s): {b.get('wall_s', 0):.0f} s, peak RSS "
                         f"{b['peak_rss_bytes'] / 2**30:.1f} GiB, GGUF {b.get('model_bytes', 0) / 2**30:.2f} GiB.")
    return lines + ["", ("The peer's builder decodes every expert to bf16 while it works (about 1.6 GB more RSS per "
                    "layer: ~51 GB for 24 layers), so the full model cannot be built on this 24 GB machine; the full "
                    "model is compared through the extrapolation above. Our exporter streams: 2.7 GB peak for all 24 "
                    "layers."), ""]


# ------------------------------------------------------------------------------------- full model, floor
def section_full(results: dict, f: dict) -> list[str]:
    full = results["full"]
    lines = ["## gpt-oss-20b, all 24 layers (ours)", "",
             (f"Measured by `{full.get('command', results['command'])}` (the slices above may come from a later "
             f"run with `--skip-full`, which keeps this section); {plural(f.get('rounds', 0), 'round')}."), "",
             ("Decode contexts are filled with random keys and values (`--fill synthetic`): a decode step "
             "costs the same whatever the cached values are, and prefilling 32k tokens on 2 cores would take "
             "most of an hour."), "",
             "| metric | gptoss |", "|---|---|",
             (f"| export time / peak RSS | {fmt(_get(full, 'ours_export', 'export_s'), ' s', 0)} / "
             f"{fmt(_gib(_get(full, 'ours_export', 'export_peak_rss_bytes')), ' GiB', 2)} |"),
             f"| load, warm (s) | {fmt(f.get('load_s'), '', 2)} |",
             f"| load, cold page cache (s) | {fmt(cold_load(full, 'ours'), '', 2)} |"]
    for n in PROMPTS:
        lines.append(f"| time to first token, {n}-token prompt (s) | {fmt(_get(f, 'prompts', n, 'ttft_s'), '', 2)} |")
    lines.append(f"| prefill tok/s (2048) | {fmt(_get(f, 'prompts', 2048, 'prefill_tok_s'))} |")
    for c in CONTEXTS:
        lines.append(f"| decode tok/s at {c // 1024}k context | {fmt(_get(f, 'contexts', c, 'decode_tok_s'), '', 2)} |")
    note = _get(full, "ours_export", "note")
    return lines + [f"| peak RSS while generating (GiB) | {fmt(_gib(f.get('peak_rss_bytes')), '', 2)} |",
                    f"| bundle on disk (GiB) | {fmt(_gib(f.get('model_bytes')), '', 2)} |", "",
                    *([f"Export: {note}.", ""] if note else [])]


def section_floor(results: dict, f: dict) -> list[str]:
    bpt = results["full"]["bytes_per_token"]
    floor = results["bandwidth_gbs"] * 1e9 / bpt["total"]
    d1 = median_of(_get(f, "contexts", 1024, "decode_tok_s"))
    return ["### The decode floor", "",
            (f"One decode step reads {bpt['total'] / 1e9:.2f} GB of weights: active experts (4 of 32) "
            f"{bpt['experts_active'] / 1e9:.2f} GB, attention {bpt['attention'] / 1e9:.2f} GB, unembedding "
            f"{bpt['unembedding'] / 1e9:.2f} GB. At {results['bandwidth_gbs']:.1f} GB/s that is a floor of "
            f"**{1e3 / floor:.0f} ms per token ({floor:.2f} tok/s)**; at 1k context we decode at "
            f"{fmt(d1, ' tok/s', 2)} (median), **{100 * (d1 or 0) / floor:.0f}% of the floor's speed**."), ""]


def section_kv8(results: dict, f: dict, k: dict) -> list[str]:
    """The same 24 layers exported with `--kv-cache int8`, measured alternating with the default (an option: it costs
    fidelity, docs/quantization.md)."""
    lines = ["### The int8 KV cache option (`--kv-cache int8`), all 24 layers", "",
             ("The same checkpoint exported with `gptoss-export export CK -o B --kv-cache int8` (scales calibrated at "
              "export), measured in the same run, the two bundles alternating round by round. It is an option, not "
              "the default: its fidelity cost is in [quantization.md](quantization.md)."), "",
             "| decode tok/s, median (min-max) | float32 cache (default) | int8 cache | int8 / float32 |",
             "|---|---|---|---|"]
    for c in CONTEXTS:
        a, b = _get(f, "contexts", c, "decode_tok_s"), _get(k, "contexts", c, "decode_tok_s")
        lines.append(f"| {c // 1024}k context | {fmt(a, '', 2)} | {fmt(b, '', 2)} | {ratio(b, a, True)} |")
    lines.append(f"| peak RSS while generating (GiB) | {fmt(_gib(f.get('peak_rss_all_bytes')), '', 2)} | "
                 f"{fmt(_gib(k.get('peak_rss_all_bytes')), '', 2)} | |")
    full = results["full"]
    exports = [full.get("ours_export") or {}, full.get("ours_kv8_export") or {}]
    lines.append("| export time (s) / peak RSS (GiB) | " + " | ".join(
        f"{fmt(e.get('export_s'), '', 0)} / {fmt(_gib(e.get('export_peak_rss_bytes')), '', 2)}" for e in exports)
        + " | |")
    notes = [f"- {name}: {e['note']}." for name, e in zip(("float32 export", "int8 export"), exports) if e.get("note")]
    return lines + ([""] + notes if notes else []) + [""]


def section_batched(full: dict) -> list[str]:
    """Aggregate decode tok/s with B sequences per graph call (bench/batched_decode.py's JSON under full.batched)."""
    b = full.get("batched") or {}
    if not b.get("batches"):
        return []
    lines = ["### Several sequences per decode step, all 24 layers", "",
             (f"B sequences advanced together in one graph call (`Engine.decode_batch`; the server batches its decode "
              f"steps this way), each with about {b.get('context')} positions of context, {b.get('steps')} timed "
              f"steps after {b.get('warmup')} warm-up ones, {b.get('rounds')} rounds alternating the order of B"
              + (f"; {b['note']}" if b.get("note") else "") + "."), "",
             "| B | aggregate decode tok/s | ms per step | vs B = 1 |", "|---|---|---|---|"]
    for B, r in sorted(b["batches"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {B} | {fmt(r['tok_s'], '', 2)} | {fmt(r['step_ms'], '', 0)} | {r.get('speedup', 0):.2f}x |")
    return lines + [""]


# ------------------------------------------------------------------------------------- plot
def decode_series(agg: dict, eps: dict, f: dict | None, peers: list[str], kv8: dict | None = None) -> dict[str, dict]:
    """label -> {context: decode tok/s summary (or a plain number for an extrapolation)}."""
    series = {}
    for key, name in (("ours", "gptoss"), *((k, PEERS[k]) for k in peers)):
        series.update({f"{name}, {L} layers": {c: v["decode_tok_s"] for c, v in sides[key].get("contexts", {}).items()}
                       for L, sides in agg.items()})
    for key, ep in eps.items():
        series[f"{PEERS[key]}, 24 layers (extrapolated)"] = {c: 1e3 / ep[c]["at24"] for c in CONTEXTS if ep.get(c)}
    if f:
        series["gptoss, 24 layers"] = {c: v["decode_tok_s"] for c, v in f.get("contexts", {}).items()}
    if kv8:
        series["gptoss, 24 layers, int8 KV cache"] = {c: v["decode_tok_s"] for c, v in kv8.get("contexts", {}).items()}
    return series


def plot(path: Path, series: dict[str, dict]) -> None:
    """Decode tok/s against context: the medians, with bars from the slowest to the fastest round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.2))
    for label, points in series.items():
        xs = sorted(c for c in points if points[c] is not None)
        if not xs:
            continue
        ys = [median_of(points[x]) for x in xs]
        lo = [y - (points[x]["min"] if is_summary(points[x]) else y) for x, y in zip(xs, ys)]
        hi = [(points[x]["max"] if is_summary(points[x]) else y) - y for x, y in zip(xs, ys)]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=label,
                    linestyle="--" if PEER in label else ":" if LLAMACPP in label else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(list(CONTEXTS), [f"{c // 1024}k" for c in CONTEXTS])
    ax.set_xlabel("context (tokens)")
    ax.set_ylabel("decode tok/s (2 threads)\nmedian; bars: min–max")
    ax.set_title("gpt-oss-20b shapes on 2 CPU cores: decode speed vs context")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------- the page
def write_report(results: dict, md: Path, png: Path, rendered_by: str | None = None) -> None:
    """results: benchmarks.json as bench/benchmarks.py writes it (slice keys may be ints or strings).
    rendered_by: the command line, when the page is written from saved measurements (--report-only)."""
    s = {int(L): e for L, e in sorted(results["slices"].items(), key=lambda kv: int(kv[0]))}
    agg = {L: slice_sides(e) for L, e in s.items()}
    peers = peers_in(s)
    lines = section_header(results, s, rendered_by) + section_slices(s, agg) + section_fidelity(s)
    eps = {}
    if all(L in agg for L in SLICES):
        eo = extrapolate(*(medians(agg[L]["ours"]) for L in SLICES))
        eps = {k: extrapolate(*(medians(agg[L][k]) for L in SLICES)) for k in peers}
        lines += section_extrapolation(s, eo, eps)
    f = aggregate(results["full"]["ours_runs"]) if results.get("full") else None
    kv8 = aggregate(results["full"]["ours_kv8_runs"]) if f and results["full"].get("ours_kv8_runs") else None
    if f:
        lines += (section_full(results, f) + (section_kv8(results, f, kv8) if kv8 else [])
                  + section_batched(results["full"]) + section_floor(results, f))
    plot(png, decode_series(agg, {k: e for k, e in eps.items() if any(e.get(c) for c in CONTEXTS)}, f, peers, kv8))
    lines += [f"![decode tok/s vs context, median of the rounds, bars from the slowest to the fastest]({png.name})",
              ""]
    md.write_text("\n".join(lines))
