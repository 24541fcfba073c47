"""What the pipeline does around its stages: progress lines and bars, the staged output folder, the tokenizer."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from gptoss.export.checkpoint import Checkpoint
from gptoss.export.errors import ExportError

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


def _check_output(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"output {out_dir} exists and is not a folder")
    if out_dir.exists() and any(out_dir.iterdir()) and not force:
        raise ExportError(f"output folder {out_dir} exists and is not empty; pass --force to replace it")


@contextlib.contextmanager
def staged_folder(out_dir: Path, force: bool):
    """Yields a fresh temporary sibling of `out_dir`; renames it into place when the block succeeds, removes it
    when anything (an error, Ctrl-C) interrupts the block."""
    _check_output(out_dir, force)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        _replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        out_dir.rename(old)
    tmp.rename(out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_tokenizer(folder: Path, ckpt: Checkpoint) -> dict | None:
    """The bundle's own tokenizer: from the checkpoint's tokenizer.json, else tiktoken's offline cache.

    A model whose vocabulary is smaller than o200k_harmony's (a synthetic test model) gets none: its bundle
    speaks token ids only, and the manifest says so (tokenizer: null)."""
    from gptoss.export.tokenizer_files import harmony_special_tokens, write_bundle_tokenizer

    if ckpt.config.vocab_size < max(harmony_special_tokens().values()) + 1:
        return None
    return write_bundle_tokenizer(folder, source=ckpt.tokenizer_path if ckpt.has_tokenizer else None)
