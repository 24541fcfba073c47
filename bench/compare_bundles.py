"""Decode speed of two (or more) bundles of the same model, side by side: one fresh process per run
(bench/batched_decode.py at B = 1), the bundles alternating round by round. Before each run the other bundles'
pages are dropped from the page cache and the run's own bundle is read into it: two full 20b bundles do not both
fit in this machine's memory, so a run would otherwise page its weights in while it is timed. Prints one JSON object: per bundle, every round's tok/s and step ms, their median,
min and max.

    python bench/compare_bundles.py BUNDLE_A BUNDLE_B [--rounds 4] [--context 1024] [--steps 48] [--warmup 8]
                                    [--threads 2] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from stats import summarize  # noqa: E402


def files(bundle: Path) -> list[Path]:
    return [f for f in sorted(bundle.rglob("*")) if f.is_file()]


def evict_from_page_cache(bundle: Path) -> None:
    """Drop a bundle's clean pages (posix_fadvise DONTNEED; no root needed), so the next run's bundle has the room."""
    for f in files(bundle):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_into_page_cache(bundle: Path, chunk: int = 64 << 20) -> None:
    for f in files(bundle):
        with open(f, "rb") as fh:
            while fh.read(chunk):
                pass


def one_run(bundle: Path, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.json"
        subprocess.run([sys.executable, str(HERE / "batched_decode.py"), str(bundle), "--batches", "1",
                        "--context", str(args.context), "--steps", str(args.steps), "--warmup", str(args.warmup),
                        "--rounds", "1", "--threads", str(args.threads), "--json", str(out)],
                       check=True, stdout=subprocess.DEVNULL)
        one = json.loads(out.read_text())["batches"]["1"]
    return {"tok_s": one["tok_s"]["median"], "step_ms": one["step_ms"]["median"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", type=Path, nargs="+")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--steps", type=int, default=48)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    missing = [str(b) for b in args.bundles if not (b / "manifest.json").is_file()]
    if missing:
        sys.exit(f"not a bundle (no manifest.json): {', '.join(missing)}")
    runs: dict[str, list[dict]] = {str(b): [] for b in args.bundles}
    for r in range(args.rounds):
        for bundle in (args.bundles if r % 2 == 0 else list(reversed(args.bundles))):
            for other in args.bundles:
                if other != bundle:
                    evict_from_page_cache(other)
            read_into_page_cache(bundle)
            runs[str(bundle)].append(one_run(bundle, args))
            print(f"round {r + 1}/{args.rounds} {bundle.name}: {runs[str(bundle)][-1]['tok_s']:.2f} tok/s",
                  file=sys.stderr)
    result = {"context": args.context, "steps": args.steps, "warmup": args.warmup, "threads": args.threads,
              "rounds": args.rounds,
              "bundles": {b: {"tok_s": summarize([x["tok_s"] for x in rs], higher_is_better=True),
                              "step_ms": summarize([x["step_ms"] for x in rs], higher_is_better=False)}
                          for b, rs in runs.items()}}
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
