"""Fidelity of the cpu target's cached decode against the fp32 reference model, with and without
targets/passes/full_attention.py (full layers decoding in matrix products vs GroupQueryAttention).

    python bench/decode_fidelity.py CHECKPOINT [--prefill 128] [--decode 128] [--work DIR]

Both bundles keep every dense weight in fp32, so what differs is attention alone. Each prefills the same random
tokens, then decodes the next ones one at a time; the decoded positions' logits are compared with the reference's
(relative error ||got - ref|| / ||ref||, max |diff|, top-1 agreement). Prints one JSON line per side.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from export_gqa_twin import gqa_twin  # noqa: E402

FP32 = dict(attention="fp32", embedding="fp32", unembedding="fp32")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--decode", type=int, default=128)
    ap.add_argument("--work", type=Path, help="folder for the two bundles (default: a temp dir)")
    args = ap.parse_args()

    import torch

    from gptoss.compile.pipeline import export_bundle
    from gptoss.export import load_model
    from gptoss.export.checkpoint import Checkpoint
    from gptoss.runtime import Model
    from gptoss.targets.registry import TARGETS

    vocab = Checkpoint.open(args.checkpoint).config.vocab_size
    tokens = np.random.default_rng(0).integers(0, vocab, args.prefill + args.decode)
    reference = load_model(args.checkpoint)(torch.from_numpy(tokens)).numpy()[args.prefill:]
    cpu, without = TARGETS["cpu"], gqa_twin()
    work = args.work or Path(tempfile.mkdtemp(prefix="gptoss-decode-fidelity-"))
    for side, target in (("matrix products", cpu), ("GroupQueryAttention", without)):
        bundle = export_bundle(args.checkpoint, work / target.name, target=target, quant=FP32, force=True)
        engine = Model.load(bundle).engine
        cache = engine.new_cache(len(tokens))
        engine.prefill(cache, tokens[:args.prefill])
        got = np.stack([engine.decode(cache, int(t), engine.logits_buffer()).copy() for t in tokens[args.prefill:]])
        diff = got - reference
        print(json.dumps({"full layers decode with": side,
                          "relative_error": float(np.linalg.norm(diff) / np.linalg.norm(reference)),
                          "max_abs_diff": float(np.abs(diff).max()),
                          "top1_agreement": float((got.argmax(-1) == reference.argmax(-1)).mean())}))
        shutil.rmtree(bundle)


if __name__ == "__main__":
    main()
