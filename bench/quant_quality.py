"""Logit fidelity of the CPU bundle's dense-weight schemes against the fp32 PyTorch reference.

    python bench/quant_quality.py --preset tiny                       # tiny synthetic model
    python bench/quant_quality.py --preset 20b --layers 2 --tokens 64  # full width, 2 layers
    python bench/quant_quality.py ... --markdown docs/quantization.md  # append the table there
    python bench/quant_quality.py --checkpoint CK --weights-only      # the weights' own error per integer scheme

For each scheme of the dense parts (attention, embedding, unembedding; experts stay exact MXFP4, router fp32), and
with the int8 KV cache (`--kv-cache int8`, calibrated at export on compile/calibrate.py's text), it exports a `cpu`
bundle, scores one random token sequence through the runtime (one prefill scoring every position)
and reports the relative logit error ||got - ref|| / ||ref||, the max |diff| and the top-1 agreement.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SCHEMES = {       # row -> (dense scheme, KV cache dtype: None = the cpu target's float32)
    "fp32": (dict(attention="fp32", embedding="fp32", unembedding="fp32"), None),
    "int8": (dict(attention="int8", embedding="int8", unembedding="int8"), None),
    "int8 in blocks of 128 (attention, unembedding)":
        (dict(attention="int8_b128", embedding="int8", unembedding="int8_b128"), None),
    "int4": (dict(attention="int4", embedding="int4", unembedding="int4"), None),
    "fp32, int8 KV cache": (dict(attention="fp32", embedding="fp32", unembedding="fp32"), "int8"),
    "int8, int8 KV cache": (dict(attention="int8", embedding="int8", unembedding="int8"), "int8"),
}


def measure(ckpt: Path, work: Path, tokens: np.ndarray) -> list[dict]:
    import torch

    from gptoss.export import load_model
    from gptoss.compile.pipeline import export_bundle
    from gptoss.runtime import Model

    reference = load_model(ckpt)(torch.from_numpy(tokens)).numpy()
    rows = []
    for name, (quant, kv_cache) in SCHEMES.items():
        bundle = export_bundle(ckpt, work / f"bundle-{name.replace(', ', '-').replace(' ', '_')}", target="cpu",
                               quant=quant, kv_cache=kv_cache, force=True)
        got = Model.load(bundle).logits(tokens.tolist())
        diff = got - reference
        rows.append({
            "scheme": name,
            "relative_error": float(np.linalg.norm(diff) / np.linalg.norm(reference)),
            "max_abs_diff": float(np.abs(diff).max()),
            "top1_agreement": float((got.argmax(-1) == reference.argmax(-1)).mean()),
            "bundle_bytes": sum(p.stat().st_size for p in bundle.rglob("*") if p.is_file()),
        })
        shutil.rmtree(bundle)                 # full-width fp32 bundles are GBs each: keep one at a time
    return rows


def weight_errors(ckpt: Path, rows: int = 8192) -> dict:
    """Relative error ||dequant(quant(W)) - W|| / ||W|| of layer 0's attention weights (first `rows` rows) under each
    block-wise integer dense scheme: the weights' own cost, apart from the logits' noise."""
    from gptoss.export.checkpoint import Checkpoint
    from gptoss.quant.blockwise import dequantize_packed, pack_matmul_nbits, quantize_blockwise
    from gptoss.quant.schemes import get_scheme

    ck = Checkpoint.open(ckpt)
    out = {}
    for name in ("layers.0.qkv.weight", "layers.0.out.weight"):
        w = np.asarray(ck.read(name)[:rows], np.float32)
        for scheme in ("int8", "int8_b128", "int4"):
            row = get_scheme(scheme)
            q = dequantize_packed(pack_matmul_nbits(quantize_blockwise(w, row.bits, row.block_size)))
            out[f"{name} {scheme}"] = float(np.linalg.norm(q[:, :w.shape[1]] - w) / np.linalg.norm(w))
    return out


def to_markdown(rows: list[dict], args, command: str) -> str:
    model = (f"checkpoint {Path(args.checkpoint).name}" if args.checkpoint else
             f"{args.preset} preset" + (f", {args.layers} layers" if args.layers else ""))
    lines = [f"### {model}, {args.tokens} tokens, seed {args.seed}", "",
             f"`{command}` ({platform.node() or 'this machine'}, {time.strftime('%Y-%m-%d')})", "",
             "| dense scheme, KV cache | relative logit error | max abs diff | top-1 agreement | bundle |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['scheme']} | {r['relative_error']:.2e} | {r['max_abs_diff']:.3g} | "
                     f"{100 * r['top1_agreement']:.1f}% | {r['bundle_bytes'] / 2**20:.1f} MiB |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="an existing checkpoint (else a synthetic one)")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--layers", type=int)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="folder for checkpoints and bundles (default: a temp dir)")
    parser.add_argument("--markdown", type=Path, help="append the table to this file")
    parser.add_argument("--weights-only", action="store_true",
                        help="print only the weights' own quantization error per integer scheme (no logits)")
    args = parser.parse_args()

    from gptoss.export.synth import synth_config, write_synthetic

    work = args.work or Path(tempfile.mkdtemp(prefix="gptoss-quality-"))
    ckpt = args.checkpoint
    if ckpt is None:
        cfg = synth_config(args.preset, layers=args.layers)
        ckpt = work / "checkpoint"
        if not (ckpt / "config.json").exists():
            write_synthetic(ckpt, cfg, layout="hf", seed=args.seed, force=True)
    from gptoss.export.checkpoint import Checkpoint

    vocab = Checkpoint.open(ckpt).config.vocab_size
    tokens = np.random.default_rng(args.seed).integers(0, vocab, args.tokens)
    if args.weights_only:
        print(json.dumps(weight_errors(ckpt), indent=2))
        return
    rows = measure(ckpt, work, tokens)
    print(json.dumps(rows, indent=2))
    if args.markdown:
        command = "python bench/quant_quality.py " + " ".join(sys.argv[1:])
        with open(args.markdown, "a") as f:
            f.write("\n" + to_markdown(rows, args, command))


if __name__ == "__main__":
    main()
