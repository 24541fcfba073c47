"""The GPU check: one prepared script for a lent GPU machine (H200), under 10 minutes. Prints one JSON document.

    python bench/gpu_check.py [--work /tmp/gpu_check] [--peer] [--layers 1 2] > gpu_check.json

Steps, each recorded (with its error text when it fails) rather than stopping the script:
  1. environment: nvidia-smi, onnxruntime's version and providers, which plugin EPs import;
  2. checkpoints: the tiny preset, and full-width 20b slices of 1 and 2 layers (synthetic, published layout);
  3. bundles for `cuda` (and `trt-rtx` when its plugin imports): tiny, and the slices;
  4. fidelity: logits of each bundle on the GPU against the fp32 PyTorch reference (relative error, top-1);
  5. graph capture (`cuda` only): 160 greedy steps (past the sliding window of 128) decoded by replaying a captured
     CUDA graph (`Model.load(graph_capture=True)`) against the same bundle decoding plainly: the largest relative
     logit difference, and whether the tokens agree;
  6. speed: prefill of a 512-token prompt and 64 greedy decode steps at 1k context, each side run 3 times (median
     and spread), ours (plain, and with capture for `cuda`) and onnxruntime-genai-cuda (`--peer`, its builder
     `-p int4 -e cuda` on the same slices) alternating.

Run it from the repository root with the project importable (PYTHONPATH=. works: the repo root is `gptoss`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULT: dict = {"steps": {}}


def step(name: str):
    """Record a step's result or its error text in RESULT; never stop the script."""
    def wrap(fn):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                out = fn(*args, **kwargs)
                RESULT["steps"][name] = {"ok": True, "seconds": round(time.perf_counter() - t0, 1), "result": out}
                return out
            except Exception as e:  # a lent machine may lack anything: say what, go on
                RESULT["steps"][name] = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:800]}"}
                return None
        return run
    return wrap


@step("environment")
def environment() -> dict:
    import onnxruntime as ort

    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True)
    plugins = {}
    for module in ("onnxruntime_ep_nv_tensorrt_rtx", "onnxruntime_ep_webgpu"):
        try:
            __import__(module)
            plugins[module] = True
        except ImportError:
            plugins[module] = False
    return {"gpu": smi.stdout.strip(), "onnxruntime": ort.__version__, "providers": ort.get_available_providers(),
            "plugins": plugins, "python": sys.version.split()[0]}


@step("checkpoints")
def checkpoints(work: Path, layers: list[int]) -> dict:
    from gptoss.export.config import preset
    from gptoss.export.synth import synth_config, write_synthetic

    out = {"tiny": str(write_synthetic(work / "tiny", preset("tiny"), force=True))}
    for n in layers:
        out[f"20b_L{n}"] = str(write_synthetic(work / f"20b_L{n}", synth_config("20b", layers=n), force=True))
    return out


def export(ckpt: str, out: Path, target: str) -> str:
    from gptoss.compile.pipeline import export_bundle

    return str(export_bundle(ckpt, out, target=target, force=True))


def fidelity(ckpt: str, bundle: str, tokens: int = 64) -> dict:
    import numpy as np
    import torch

    from gptoss.export import load_model
    from gptoss.runtime import Model

    ids = np.random.default_rng(0).integers(1000, 199000, tokens).tolist()
    reference = load_model(ckpt)(torch.tensor(ids)).numpy()
    model = Model.load(bundle)
    got = model.logits(ids)
    return {"provider": model.provider, "kv_on_device": model.engine.placement.on_device,
            "relative_error": float(np.linalg.norm(got - reference) / np.linalg.norm(reference)),
            "top1_agreement": float((got.argmax(-1) == reference.argmax(-1)).mean())}


def capture(bundle: str, steps: int = 160) -> dict:
    """Greedy decode with the captured graph and without it, from the same prompt: do they agree past the window?"""
    import numpy as np

    from gptoss.runtime import Model

    runs = {}
    for captured in (False, True):
        model = Model.load(bundle, graph_capture=captured)
        cache, buf = model.new_cache(), model.engine.logits_buffer()
        rows = [model.engine.prefill(cache, [1000, 2000, 3000])]
        for _ in range(steps):
            rows.append(model.engine.decode(cache, int(np.argmax(rows[-1])), buf).copy())
        runs[captured] = np.stack(rows)
    err = np.linalg.norm(runs[True] - runs[False], axis=-1) / np.linalg.norm(runs[False], axis=-1)
    return {"steps": steps, "max_relative_difference": float(err.max()),
            "first_step_over_1e-3": int(np.argmax(err > 1e-3)) if (err > 1e-3).any() else None,
            "same_tokens": bool((runs[True].argmax(-1) == runs[False].argmax(-1)).all())}


def speed_ours(bundle: str, rounds: int = 3, graph_capture: bool = False) -> dict:
    import numpy as np

    from gptoss.runtime import Model

    model = Model.load(bundle, graph_capture=graph_capture)
    prompt = np.random.default_rng(1).integers(1000, 199000, 512).tolist()
    prefill, decode = [], []
    for _ in range(rounds):
        cache = model.new_cache(2048)
        t0 = time.perf_counter()
        model.engine.prefill(cache, prompt)
        prefill.append(512 / (time.perf_counter() - t0))
        cache = model.new_cache(2048)
        cache.fill_random(1024)
        model.engine.prefill(cache, [5])
        buf, token, t1 = model.engine.logits_buffer(), 5, time.perf_counter()
        for _ in range(64):
            token = int(np.argmax(model.engine.decode(cache, token, buf)))
        decode.append(64 / (time.perf_counter() - t1))
    return {"prefill_tok_s": _stats(prefill), "decode_tok_s_at_1k": _stats(decode)}


def speed_peer(ckpt: str, work: Path) -> dict:
    out = work / f"peer_{Path(ckpt).name}"
    if not (out / "genai_config.json").exists():
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", ckpt, "-o", str(out),
                        "-p", "int4", "-e", "cuda", "-c", str(work / "peer_cache")], check=True,
                       capture_output=True, text=True)
    import numpy as np
    import onnxruntime_genai as og

    model = og.Model(str(out))
    prompt = np.random.default_rng(1).integers(1000, 199000, 512).astype(np.int32)
    prefill, decode = [], []
    for _ in range(3):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=2048)
        gen = og.Generator(model, params)
        t0 = time.perf_counter()
        gen.append_tokens(prompt)
        prefill.append(512 / (time.perf_counter() - t0))
        t1 = time.perf_counter()
        for _ in range(64):
            gen.generate_next_token()
        decode.append(64 / (time.perf_counter() - t1))
    return {"prefill_tok_s": _stats(prefill), "decode_tok_s_after_512": _stats(decode)}


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu_check"))
    ap.add_argument("--layers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--peer", action="store_true", help="also build and measure onnxruntime-genai-cuda")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    env = environment() or {}
    ckpts = checkpoints(args.work, args.layers) or {}
    targets = ["cuda"] + (["trt-rtx"] if env.get("plugins", {}).get("onnxruntime_ep_nv_tensorrt_rtx") else [])
    for target in targets:
        for name, ckpt in ckpts.items():
            bundle = step(f"export {target} {name}")(export)(ckpt, args.work / f"{target}_{name}", target)
            if bundle:
                step(f"fidelity {target} {name}")(fidelity)(ckpt, bundle)
                if target == "cuda":
                    step(f"capture {target} {name}")(capture)(bundle)
                if name != "tiny":
                    step(f"speed {target} {name}")(speed_ours)(bundle)
                    if target == "cuda":
                        step(f"speed {target} {name} captured")(speed_ours)(bundle, graph_capture=True)
                    if args.peer and target == "cuda":
                        step(f"speed onnxruntime-genai {name}")(speed_peer)(ckpt, args.work)
    shutil.rmtree(args.work / "peer_cache", ignore_errors=True)
    print(json.dumps(RESULT, indent=1))


if __name__ == "__main__":
    main()
