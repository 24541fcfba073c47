"""docs/quality.md: every target and expert/dense scheme against the fp32 reference, on the tiny model.

    python bench/quality.py [--work /tmp/quality] [--out docs/quality.md]

One 43-token prompt (five sliding windows) through each bundle; relative logit error, top-1 agreement and KL against
the PyTorch reference. Each row says where it ran: the CPU provider (the GPU rows run their graphs in float32 there:
the CPU has no float16 MatMul), the QNN HTP simulator, OpenVINO's CPU device. Rows that need an absent package or
device are listed as not run, with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from npu_check import PROMPT, fidelity, tiny_target  # noqa: E402  (a sibling script)

REPO = Path(__file__).resolve().parents[1]


def cpu_twin(name: str, experts: str | None = None):
    """A GPU target's graph in float32 with fp32 dense parts, its experts as the target has them (or `experts`)."""
    from gptoss.targets.registry import TARGETS

    t = TARGETS[name]
    quant = {p: ("fp32" if p != "experts" else experts or s) for p, s in t.quant.items()}
    return dataclasses.replace(t, name=f"{name}-fp32-{quant['experts']}", activations="float32", kv_dtype="float32",
                               kv_device=False, quant=quant, allowed={p: (*a, "fp32") for p, a in t.allowed.items()})


def rows() -> list[tuple[str, str, object, str, dict, dict]]:
    """(label, where it runs, target, checkpoint "tiny" | "wide", export kwargs, load kwargs)."""
    cpu = {"provider": "cpu", "allow_fallback": True}
    out = [
        ("cpu (default: mxfp4 experts, int8 dense)", "CPU provider", "cpu", "tiny", {}, {}),
        ("cpu, int4 dense", "CPU provider", "cpu", "tiny",
         {"quant": {"attention": "int4", "embedding": "int4", "unembedding": "int4"}}, {}),
        ("cpu, fp32 dense", "CPU provider", "cpu", "tiny",
         {"quant": {"attention": "fp32", "embedding": "fp32", "unembedding": "fp32"}}, {}),
        ("portable (mxfp4 experts, fp32)", "CPU provider", "portable", "tiny", {}, {}),
    ]
    for name, experts in (("cuda", "int8"), ("cuda", "int4"), ("trt-rtx", None), ("webgpu", None), ("dml", None)):
        twin = cpu_twin(name, experts)
        out.append((f"{name} graph in fp32, {twin.quant['experts']} experts", "CPU provider", twin,
                    "wide" if name == "trt-rtx" else "tiny", {}, cpu))
    for name, where in (("qnn", "QNN HTP simulator, no CPU fallback"),
                        ("openvino", "OpenVINO CPU device, no CPU fallback")):
        for experts in ("int8", "int4"):
            out.append((f"{name} (static, {experts} experts)", where, tiny_target(name, experts), "tiny", {}, {}))
    return out


def measure(ckpts: dict[str, Path], work: Path, reference: dict[str, np.ndarray]) -> list[dict]:
    from gptoss.compile.pipeline import export_bundle
    from gptoss.runtime import Model

    results = []
    for k, (label, where, target, ckpt, export_kw, load_kw) in enumerate(rows()):
        try:
            bundle = export_bundle(ckpts[ckpt], work / f"b{k}", target=target, force=True, **export_kw)
            got = Model.load(bundle, **load_kw).logits(PROMPT)
            results.append({"label": label, "where": where, **fidelity(got, reference[ckpt])})
        except Exception as e:  # a missing plugin or device: say so in the table
            results.append({"label": label, "where": f"not run: {str(e).splitlines()[0][:120]}"})
    return results


def write(results: list[dict], out: Path, command: str) -> None:
    lines = ["# Fidelity of every target against the fp32 reference", "",
             f"Regenerate: `{command.strip()}`. The tiny synthetic model (4 layers, 8 experts, window 8; TRT-RTX's row uses "
             "the same model 128 wide, since its QMoE takes blocks of 128 only), one 43-token prompt (five sliding "
             "windows), every position's logits against the PyTorch reference in fp32. Random weights exaggerate "
             "quantization error: these rows rank the schemes, they do not predict the real model's loss.", "",
             "| target and scheme | ran on | relative logit error | top-1 agreement | KL (nats/position) |",
             "|---|---|---|---|---|"]
    for r in results:
        if "relative_error" in r:
            lines.append(f"| {r['label']} | {r['where']} | {r['relative_error']:.2e} | {100 * r['top1']:.1f}% | "
                         f"{r['kl_nats']:.2e} |")
        else:
            lines.append(f"| {r['label']} | {r['where']} | | | |")
    lines += ["", "What is not here: the float16 GPU graphs themselves (cuda, trt-rtx, webgpu, dml, coreml) on their "
              "GPUs; no GPU was lent to this work (docs/targets.md).", ""]
    out.write_text("\n".join(lines))


def main() -> None:
    import shlex

    import torch

    from gptoss.export import load_model
    from gptoss.export.config import preset
    from gptoss.export.synth import write_synthetic

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/quality"))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "quality.md")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    tiny = write_synthetic(args.work / "tiny", preset("tiny"), force=True)
    wide = write_synthetic(args.work / "wide", preset("tiny").replace(hidden_size=128, intermediate_size=128),
                           force=True)
    ckpts = {"tiny": tiny, "wide": wide}
    reference = {name: load_model(ck)(torch.tensor(PROMPT)).numpy() for name, ck in ckpts.items()}
    write(measure(ckpts, args.work, reference), args.out, "python bench/quality.py " + shlex.join(sys.argv[1:]))


if __name__ == "__main__":
    main()
