"""NPU targets on what this machine has: the QNN HTP simulator (onnxruntime-qnn) and OpenVINO's CPU device.
Prints one JSON document; docs/targets.md quotes it.

    python bench/npu_check.py [--work /tmp/npu_check] [--full-bundle DIR] [--out FILE]

(the QNN simulator prints a line of its own on stdout: --out writes the JSON to a file of its own)

For the tiny model with small static shapes (8-token chunks, 64 positions, split in 4 parts):
  * fidelity against the fp32 reference of int8 (exact) and int4 experts: relative logit error, top-1, KL;
  * the two MoE forms for prefill (every expert once per chunk, "branches", or a per-token gather): simulator time
    of a 43-token prefill, and the transient bytes a gather would need at gpt-oss-20b's size;
  * load time of the JIT-compiled graphs against the AOT context models (3 loads each, median);
and, with --full-bundle, the part sizes of a full 20b qnn bundle (gptoss-export export ck20b -o DIR --target qnn).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import numpy as np

PROMPT = list(range(1000, 1043))


def tiny_target(name: str, experts: str, prefill: str = "branches"):
    from gptoss.bundle import Static
    from gptoss.targets.base import Split
    from gptoss.targets.passes.moe_ops import MoeToSparseOps
    from gptoss.targets.registry import TARGETS

    base = TARGETS[name]
    passes = tuple(MoeToSparseOps(prefill) if isinstance(p, MoeToSparseOps) else p for p in base.passes)
    return dataclasses.replace(base, name=f"{name}-tiny-{experts}-{prefill}", shapes=Static(8, 64), split=Split(2),
                               passes=passes, quant={**base.quant, "experts": experts})


def fidelity(got: np.ndarray, ref: np.ndarray) -> dict:
    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))
    lp, lq = log_softmax(ref.astype(np.float64)), log_softmax(got.astype(np.float64))
    return {"relative_error": float(np.linalg.norm(got - ref) / np.linalg.norm(ref)),
            "top1": float((got.argmax(-1) == ref.argmax(-1)).mean()),
            "kl_nats": float((np.exp(lp) * (lp - lq)).sum(-1).mean())}


def timed_loads(bundle: Path, n: int = 3) -> dict:
    from gptoss.runtime import Model

    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        Model.load(bundle)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def one_target(name: str, ckpt: Path, work: Path, reference: np.ndarray) -> dict:
    from gptoss.compile.pipeline import export_bundle
    from gptoss.runtime import Model

    out: dict = {}
    for experts in ("int8", "int4"):
        for prefill in (("branches", "gather") if experts == "int8" else ("branches",)):
            bundle = export_bundle(ckpt, work / f"{name}_{experts}_{prefill}", target=tiny_target(name, experts, prefill),
                                   force=True)
            model = Model.load(bundle)
            t0 = time.perf_counter()
            got = model.logits(PROMPT)
            out[f"{experts}/{prefill}"] = {**fidelity(got, reference), "prefill_43_tokens_s": time.perf_counter() - t0}
    jit = work / f"{name}_int8_branches"
    aot = export_bundle(ckpt, work / f"{name}_int8_aot", target=tiny_target(name, "int8"), force=True, aot=True)
    out["load_jit"], out["load_aot"] = timed_loads(jit), timed_loads(aot)
    return out


def gather_bytes_at_20b(chunk: int = 64) -> dict:
    """Transient float16 weights a per-token gather would decode for one prefill chunk of gpt-oss-20b, one layer."""
    hidden, inter, k = 2880, 2880, 4
    per_expert = (2 * inter * hidden + hidden * inter) * 2
    return {"chunk": chunk, "gather_bytes_per_layer": chunk * k * per_expert, "branches_bytes_per_layer": 0}


def part_sizes(bundle: Path) -> dict:
    """Weight bytes each part of the prefill graph reads from the shared weights file (its decode twin reads the
    same tensors), the graph files, and the whole bundle."""
    import onnx

    from gptoss.bundle import load_manifest

    m = load_manifest(bundle)
    per_part = {}
    for part in m.graphs["prefill"].parts:
        model = onnx.load(str(bundle / part), load_external_data=False)
        spans = {(e["offset"], e["length"]) for t in model.graph.initializer if t.data_location == 1
                 for e in [dict((kv.key, int(kv.value) if kv.key != "location" else 0) for kv in t.external_data)]}
        per_part[part] = sum(length for _, length in spans)
    return {"weights_bytes_per_prefill_part": per_part, "parts_bytes": m.parts,
            "total_bytes": sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file())}


def main() -> None:
    import torch

    from gptoss.export import load_model
    from gptoss.export.config import preset
    from gptoss.export.synth import write_synthetic

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/npu_check"))
    ap.add_argument("--full-bundle", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the JSON here instead of stdout")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ckpt = write_synthetic(args.work / "tiny", preset("tiny"), force=True)
    reference = load_model(ckpt)(torch.tensor(PROMPT)).numpy()
    result = {"qnn": one_target("qnn", ckpt, args.work, reference),
              "openvino": one_target("openvino", ckpt, args.work, reference),
              "gather_vs_branches_at_20b": gather_bytes_at_20b()}
    if args.full_bundle:
        result["full_20b"] = part_sizes(args.full_bundle)
    text = json.dumps(result, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
