"""What the pipeline does around its stages: progress lines and bars, the staged output folder, the tokenizer."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path

from gptoss.export.checkpoint import Checkpoint
from gptoss.export.output_folder import staged

STAGES = 6


class Log:
    """Progress of an export on stdout (stage lines) and stderr (tqdm bars); silent unless `enabled`."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def line(self, msg: str) -> None:
        if self.enabled:
            print(msg, flush=True)

    def stage(self, n: int, name: str, detail: str) -> None:
        self.line(f"[{n}/{STAGES} {name}] {detail}")

    @contextlib.contextmanager
    def bytes_bar(self, total: int, desc: str):
        """Yields `advance(nbytes)`; a byte-counting bar with an ETA when enabled."""
        if not self.enabled:
            yield lambda n: None
            return
        from tqdm import tqdm

        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=desc) as bar:
            yield bar.update

    def files_bar(self, paths: list[Path], total: int):
        """Iterate `paths` (of `total` bytes) under a "checksums" bar."""
        with self.bytes_bar(total, "checksums") as advance:
            for path in paths:
                yield path
                advance(path.stat().st_size)


def is_bundle(folder: Path) -> bool:
    """`folder` holds a bundle's manifest.json (of any format version): the only thing `--force` replaces."""
    from gptoss.bundle.manifest import FORMAT, MANIFEST

    try:
        doc = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def staged_folder(out_dir: Path, force: bool, inputs: Iterable[Path] = ()):
    """A context yielding a fresh temporary sibling of `out_dir`, renamed into place when the block succeeds and
    removed when anything (an error, Ctrl-C) interrupts it (export/output_folder.py). An existing non-empty
    `out_dir` is replaced only with `force` and only if it holds a bundle; never one of `inputs` (the checkpoint's
    folders and files), a folder holding one, or a folder inside the checkpoint."""
    return staged(out_dir, force=force, replaceable=is_bundle, kind="bundle", inputs=inputs)


def write_tokenizer(folder: Path, ckpt: Checkpoint) -> dict | None:
    """The bundle's own tokenizer: from the checkpoint's tokenizer.json, else tiktoken's offline cache.

    A model whose vocabulary is smaller than o200k_harmony's (a synthetic test model) gets none: its bundle
    speaks token ids only, and the manifest says so (tokenizer: null)."""
    from gptoss.export.tokenizer_files import harmony_special_tokens, write_bundle_tokenizer

    if ckpt.config.vocab_size < max(harmony_special_tokens().values()) + 1:
        return None
    return write_bundle_tokenizer(folder, source=ckpt.tokenizer_path if ckpt.has_tokenizer else None)
