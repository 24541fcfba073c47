"""Export a checkpoint for the `cpu` target WITHOUT targets/passes/full_attention.py (GroupQueryAttention on every
layer, as before that pass): the baseline that docs/performance.md measures the full-layer products against.

    python bench/export_gqa_twin.py CHECKPOINT OUT
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()

    from gptoss.compile.pipeline import export_bundle

    print(export_bundle(args.checkpoint, args.out, target=gqa_twin(), force=True))


def gqa_twin():
    """The `cpu` target row without FullAttentionToMatMul, named `cpu_gqa`."""
    from gptoss.targets.passes.full_attention import FullAttentionToMatMul
    from gptoss.targets.registry import TARGETS

    cpu = TARGETS["cpu"]
    return dataclasses.replace(cpu, name="cpu_gqa",
                               passes=tuple(p for p in cpu.passes if not isinstance(p, FullAttentionToMatMul)))


if __name__ == "__main__":
    main()
