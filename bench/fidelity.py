"""Fidelity against the fp32 PyTorch reference: our cpu bundle and the peer's int4 model, same prompt.

    python bench/fidelity.py CHECKPOINT OUR_BUNDLE PEER_MODEL [--tokens 64] [--peer-python ...] [--json OUT]

Reports, per side, the relative logit error ||got - ref|| / ||ref||, the max |diff| and top-1 agreement over
every prompt position. The reference is gptoss.export.load_model (itself golden-tested against OpenAI's and
Hugging Face's implementations).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peer import prompt_ids  # noqa: E402  (stdlib + numpy only)


def compare(got: np.ndarray, ref: np.ndarray) -> dict:
    diff = got - ref
    return {"relative_error": float(np.linalg.norm(diff) / np.linalg.norm(ref)),
            "max_abs_diff": float(np.abs(diff).max()),
            "top1_agreement": float((got.argmax(-1) == ref.argmax(-1)).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("peer_model", type=Path)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--peer-python", default="/work/peer-venv/bin/python")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    import torch

    from gptoss.export import load_model
    from gptoss.runtime import Model

    ids = prompt_ids(args.tokens, seed=0).astype(np.int64)
    reference = load_model(args.checkpoint)(torch.from_numpy(ids)).numpy()
    result = {"tokens": args.tokens, "ours": compare(Model.load(args.bundle).logits(ids.tolist()), reference)}
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/ids.npy", ids)
        subprocess.run([args.peer_python, str(Path(__file__).with_name("peer_logits.py")), str(args.peer_model),
                        f"{tmp}/ids.npy", f"{tmp}/peer.npy"], check=True)
        result["peer"] = compare(np.load(f"{tmp}/peer.npy"), reference)
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
