"""gpt-oss-20b on this machine: our bundle against onnxruntime-genai (and llama.cpp, when asked), side by side.
Regenerates docs/benchmarks.md.

    python bench/benchmarks.py [--work DIR] [--peer-python /work/peer-venv/bin/python] [--rounds 3] [--out-dir docs]
                               [--llamacpp /work/llama-venv/bin/python] [--kv-int8]
    python bench/benchmarks.py --report-only [--work DIR] [--out-dir DIR]     # rewrite the page from the saved JSON

Steps (each reuses what an earlier run left in --work):
  1. synthetic checkpoints: the full `20b` preset and full-width slices of 1, 2 and 3 layers (real layout, random
     weights: the same bytes and shapes as the real model, so the same time and memory);
  2. our `cpu` bundles (gptoss-export export), the peer's int4 CPU models (its builder, via bench/peer.py in the
     peer's own virtual environment; the full 24 layers are not attempted: its builder needs ~15 GB for 2 layers);
     with --llamacpp, llama.cpp's GGUFs of the slices (its own converter, via bench/llamacpp.py in that
     interpreter's environment: MXFP4 experts as they are, Q8_0 dense; --work/gguf/);
  3. measurements in fresh processes, the sides alternating (ours, the peer's, llama.cpp's), `--rounds` times: per
     round and side a cold load (page cache dropped first), then load time (warm), time to first token for
     128/512/2048-token prompts, prefill tok/s, decode tok/s at 1k/8k/32k of context (32k: first round only; the
     peer 1k/8k), peak RSS; bundle size on disk.
     Every round's numbers are kept in --work/benchmarks.json; the page shows per metric the median, the spread
     (min-max) and the best (bench/stats.py);
     with --kv-int8, the full model is also exported with `--kv-cache int8` and measured beside the default,
     alternating round by round;
  4. per-layer costs from the 3-, 2- and 1-layer slices' medians, extrapolated to 24 layers, beside our full-size
     numbers (`--rounds` rounds of ours too);
     then aggregate decode tok/s of B = 1, 2, 4, 8 sequences per graph call (bench/batched_decode.py, ~1k each);
  5. the decode floor: bytes of weights read per token divided by this machine's measured memory bandwidth;
  6. OUT_DIR/benchmarks.md and OUT_DIR/benchmarks-decode.png (bench/report.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))      # bench/ is not a package: its siblings, by name
from report import write_report
from stats import CONTEXTS, FULL_LAYERS, PROMPTS, SLICES, aggregate

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
DOCS = REPO / "docs"
PEER_CONTEXTS = (1024, 8192)     # 32k: one 1024-token prefill chunk needs 8.6 GB of attention scores there
LLAMACPP_OUTTYPE = "q8_0"        # the converter's type for the dense matrices: the closest to our int8 default
EXPORT_CLI = str(Path(sys.executable).parent / "gptoss-export")
KV_SUFFIX = {"int8": "_kv8"}
BATCHES = (1, 2, 4, 8)           # sequences per decode step (bench/batched_decode.py), on the full model     # --kv-cache of a variant bundle -> its folder's suffix


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_json(cmd: list[str], env: dict | None = None) -> dict:
    log(" ".join(map(str, cmd)))
    out = subprocess.run([str(c) for c in cmd], check=False, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"ok": False, "error": out.stderr.strip().splitlines()[-5:], "returncode": out.returncode}
    return json.loads(out.stdout)


def drop_page_cache() -> bool:
    """For cold-load numbers; needs root (it is, on this machine). False when not allowed."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------- artifacts
def ensure_checkpoint(work: Path, layers: int) -> Path:
    ckpt = work / ("ck20b" if layers == FULL_LAYERS else f"ck20b_L{layers}")
    if not (ckpt / "config.json").exists():
        cmd = [EXPORT_CLI, "synth", str(ckpt), "--preset", "20b", "--force"]
        if layers != FULL_LAYERS:
            cmd += ["--layers", str(layers)]
        subprocess.run(cmd, check=True)
    return ckpt


def ensure_ours(work: Path, layers: int, rebuild: bool, kv_cache: str | None = None) -> tuple[Path, dict]:
    """Our bundle of the slice (or the full model), exported when missing (the checkpoint too, only then);
    kv_cache: an export with `--kv-cache` (its own folder, `_kv8` for int8)."""
    bundle = work / (("ours20b" if layers == FULL_LAYERS else f"ours20b_L{layers}") + KV_SUFFIX.get(kv_cache, ""))
    info = {}
    if rebuild or not (bundle / "manifest.json").exists():
        ckpt = ensure_checkpoint(work, layers)
        extra = ["--kv-cache", kv_cache] if kv_cache else []
        t0 = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%M", EXPORT_CLI, "export", str(ckpt), "-o", str(bundle),
                              "--force", *extra], capture_output=True, text=True, check=True)
        info = {"export_s": time.perf_counter() - t0, "export_peak_rss_bytes": int(out.stderr.split()[-1]) * 1024}
    return bundle, info


def ensure_peer(peer_python: str, work: Path, ckpt: Path, layers: int) -> tuple[Path, dict]:
    model = work / f"peer20b_L{layers}"
    if (model / "genai_config.json").exists():
        build = work / f"build_L{layers}.json"
        return model, (json.loads(build.read_text()) if build.exists() else {})
    result = run_json([peer_python, BENCH / "peer.py", "build", ckpt, model, "--threads", "2", "--force"])
    (work / f"build_L{layers}.json").write_text(json.dumps(result, indent=1))
    return model, result


def ensure_llamacpp(llama_python: str, work: Path, ckpt: Path, layers: int) -> tuple[Path, dict]:
    """llama.cpp's GGUF of a slice (bench/llamacpp.py convert), reused when it is there; the conversion's JSON is
    kept beside it."""
    gguf = work / "gguf" / f"{ckpt.name}.{LLAMACPP_OUTTYPE}.gguf"
    info_path = gguf.with_name(gguf.name + ".json")
    if gguf.exists():
        return gguf, (json.loads(info_path.read_text()) if info_path.exists() else {})
    result = run_json([llama_python, BENCH / "llamacpp.py", "convert", ckpt, gguf, "--outtype", LLAMACPP_OUTTYPE])
    info_path.parent.mkdir(parents=True, exist_ok=True)
    info_path.write_text(json.dumps(result, indent=1))
    return gguf, result


# ------------------------------------------------------------------------------------- measuring
def measure_ours(bundle: Path, contexts, fill: str) -> dict:
    return run_json([sys.executable, BENCH / "ours.py", "measure", bundle, "--prompts", *PROMPTS,
                     "--contexts", *contexts, "--fill", fill])


def measure_peer(peer_python: str, model: Path, contexts) -> dict:
    contexts = [c for c in contexts if c in PEER_CONTEXTS]
    return run_json([peer_python, BENCH / "peer.py", "measure", model, "--prompts", *PROMPTS,
                     "--contexts", *contexts, "--prefill-chunk", "1024"])


def measure_llamacpp(llama_python: str, gguf: Path, contexts) -> dict:
    return run_json([llama_python, BENCH / "llamacpp.py", "measure", gguf, "--prompts", *PROMPTS,
                     "--contexts", *contexts])


def cold_load(cmd: list) -> float | None:
    if not drop_page_cache():
        return None
    r = run_json(cmd + ["--prompts", "--contexts", "--no-warmup"])
    return r.get("load_s")


# ----------------------------------------------------------------------------------- floor
def memory_bandwidth_gbs(size_mb: int = 2048, repeats: int = 5, threads: int = 2) -> float:
    """Read bandwidth with `threads` threads (numpy's reductions release the GIL), each summing its own
    half of a 2 GiB array; best of a few, GB/s. The decode kernels run on the same 2 threads."""
    from concurrent.futures import ThreadPoolExecutor

    a = np.ones(size_mb * (1 << 20) // 8, dtype=np.float64)
    parts = np.array_split(a, threads)
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            t0 = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = max(best, a.nbytes / (time.perf_counter() - t0) / 1e9)
    return best


def bytes_per_token(bundle: Path) -> dict:
    """Weight bytes one decode step reads: active experts (top-k of E), attention, router, unembedding,
    one embedding row."""
    m = json.loads((bundle / "manifest.json").read_text())
    cfg, parts = m["model"], m["parts"]
    active = parts["experts"] * cfg["experts_per_token"] / cfg["num_experts"]
    rotary = 2 * cfg["max_position_embeddings"] * cfg["head_dim"] // 2 * 4      # cos/sin caches: not read per token
    embedding_row = parts["embedding"] / cfg["vocab_size"]
    total = active + parts["attention"] - rotary + parts.get("router", 0) + parts["unembedding"] + embedding_row
    return {"experts_active": active, "attention": parts["attention"] - rotary, "unembedding": parts["unembedding"],
            "total": total}


# ----------------------------------------------------------------------------------- orchestration
def measure_slice(args, layers: int, have_peer: bool) -> dict:
    """One slice, `--rounds` rounds; per round, per side (ours first): a cold load, then the warm measurement.
    Dropping the page cache right before each side's own runs leaves its files cached for the warm one."""
    ckpt = ensure_checkpoint(args.work, layers)
    ours_bundle, export_info = ensure_ours(args.work, layers, args.rebuild)
    entry = {"ours_export": export_info, "ours_runs": [], "peer_runs": [], "ours_cold_load_s": []}
    if have_peer:
        peer_model, entry["peer_build"] = ensure_peer(args.peer_python, args.work, ckpt, layers)
        entry["peer_cold_load_s"] = []
    gguf = None
    if args.llamacpp:
        gguf, entry["llamacpp_convert"] = ensure_llamacpp(args.llamacpp, args.work, ckpt, layers)
        entry["llamacpp_runs"], entry["llamacpp_cold_load_s"] = [], []
        if not gguf.exists():
            gguf = None                      # the conversion failed: its JSON says why, the other sides go on
    for rnd in range(args.rounds):
        contexts = CONTEXTS if rnd == 0 else CONTEXTS[:2]      # 32k prefill is long: once
        entry["ours_cold_load_s"].append(cold_load([sys.executable, BENCH / "ours.py", "measure", ours_bundle]))
        entry["ours_runs"].append(measure_ours(ours_bundle, contexts, "prefill"))
        if have_peer:
            entry["peer_cold_load_s"].append(cold_load([args.peer_python, BENCH / "peer.py", "measure", peer_model]))
            entry["peer_runs"].append(measure_peer(args.peer_python, peer_model, contexts))
        if gguf:
            entry["llamacpp_cold_load_s"].append(cold_load([args.llamacpp, BENCH / "llamacpp.py", "measure", gguf]))
            entry["llamacpp_runs"].append(measure_llamacpp(args.llamacpp, gguf, contexts))
    if have_peer:
        entry["fidelity"] = run_json([sys.executable, BENCH / "fidelity.py", ckpt, ours_bundle, peer_model,
                                      "--tokens", "64", "--peer-python", args.peer_python])
    entry["summary"] = {"ours": aggregate(entry["ours_runs"]), "peer": aggregate(entry["peer_runs"])}
    if args.llamacpp:
        entry["summary"]["llamacpp"] = aggregate(entry["llamacpp_runs"])
    return entry


def measure_full(args, command: str) -> dict:
    """Ours on all 24 layers, `--rounds` rounds (contexts filled synthetically, so every round has all three); with
    --kv-int8 also the same model exported with `--kv-cache int8`, alternating with the default round by round."""
    bundle, export_info = ensure_ours(args.work, FULL_LAYERS, args.rebuild)
    variants = {"ours": bundle}
    full = {"ours_export": export_info, "ours_runs": [], "ours_cold_load_s": [], "command": command}
    if args.kv_int8:
        variants["ours_kv8"], full["ours_kv8_export"] = ensure_ours(args.work, FULL_LAYERS, args.rebuild, "int8")
        full["ours_kv8_runs"], full["ours_kv8_cold_load_s"] = [], []
    for rnd in range(args.rounds):
        for side in (variants if rnd % 2 == 0 else dict(reversed(variants.items()))):
            b = variants[side]
            full[f"{side}_cold_load_s"].append(cold_load([sys.executable, BENCH / "ours.py", "measure", b]))
            full[f"{side}_runs"].append(measure_ours(b, CONTEXTS, "synthetic"))
    full["summary"] = {side: aggregate(full[f"{side}_runs"]) for side in variants}
    full["bytes_per_token"] = bytes_per_token(bundle)
    full["batched"] = run_json([sys.executable, BENCH / "batched_decode.py", bundle, "--batches", *BATCHES,
                                "--context", "1024", "--steps", "16", "--rounds", str(args.rounds)])
    return full


def machine() -> dict:
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "mem_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, "node": platform.node()}


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/work/bigbench"))
    ap.add_argument("--peer-python", default="/work/peer-venv/bin/python")
    ap.add_argument("--llamacpp", metavar="PYTHON", default=None,
                    help="also measure llama.cpp: the interpreter of the venv with llama-cpp-python (bench/README.md), "
                         "e.g. /work/llama-venv/bin/python; off by default")
    ap.add_argument("--kv-int8", action="store_true",
                    help="also measure the full model exported with --kv-cache int8 (another ~12 GB bundle)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per side (default 3): the page shows the median")
    ap.add_argument("--rebuild", action="store_true", help="re-export our bundles")
    ap.add_argument("--skip-full", action="store_true", help="no full 24-layer run (keeps the last one's numbers)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the page from --work/benchmarks.json")
    ap.add_argument("--out-dir", type=Path, default=DOCS,
                    help="where benchmarks.md and benchmarks-decode.png go (default: the repo's docs/)")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    command = shlex.join(["python", *sys.argv])            # exactly what was typed (the interpreter: `python`)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    md, png = args.out_dir / "benchmarks.md", args.out_dir / "benchmarks-decode.png"
    saved = args.work / "benchmarks.json"
    if args.report_only:
        write_report(json.loads(saved.read_text()), md, png, rendered_by=command)
        log(f"wrote {md} from {saved}")
        return
    args.work.mkdir(parents=True, exist_ok=True)
    previous_full = json.loads(saved.read_text()).get("full") if saved.exists() else None
    have_peer = Path(args.peer_python).exists()
    if args.llamacpp and not Path(args.llamacpp).exists():
        sys.exit(f"--llamacpp {args.llamacpp}: no such interpreter (bench/README.md says how to make its venv)")
    results: dict = {"machine": machine(), "slices": {}, "command": command, "rounds": args.rounds}
    for layers in SLICES:
        results["slices"][layers] = measure_slice(args, layers, have_peer)
        saved.write_text(json.dumps(results, indent=1, default=str))
    if args.skip_full and previous_full:
        results["full"] = previous_full                                     # keep the last full-size run
    if not args.skip_full:
        results["full"] = measure_full(args, command)
    results["bandwidth_gbs"] = memory_bandwidth_gbs()
    saved.write_text(json.dumps(results, indent=1, default=str))
    write_report(results, md, png)
    log(f"wrote {md}")


if __name__ == "__main__":
    main()
