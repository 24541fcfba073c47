"""Tokenizer files: o200k_harmony as a checkpoint carries it, and as a bundle carries it. (Being written.)"""

from pathlib import Path


def write_checkpoint_tokenizer_files(out_dir: Path) -> bool:
    """Write tokenizer.json & co. into a checkpoint folder; False when the vocabulary is unavailable."""
    return False
