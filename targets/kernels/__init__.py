"""Which ops each execution provider registers kernels for, as data: one text file per provider, taken from ONNX
Runtime's own kernel lists (each file's header names the file and version it came from)."""

from __future__ import annotations

import functools
from pathlib import Path

HERE = Path(__file__).parent


@functools.cache
def kernels(name: str) -> frozenset[str]:
    """The ops of list `name` ("cuda", "dml", ...): `Op` for the default domain, `domain.Op` otherwise."""
    path = HERE / f"{name}.txt"
    lines = path.read_text().splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def known() -> list[str]:
    return sorted(p.stem for p in HERE.glob("*.txt"))
