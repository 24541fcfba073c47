"""The targets: every module of this package that defines `TARGET` (cpu.py, portable.py, ...), found at import.

Adding a target is adding its file (and its test, and its row in docs/targets.md): nothing here changes.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import Target, TargetError

_NOT_TARGETS = {"base", "registry", "passes", "kernels"}


def _discover() -> dict[str, Target]:
    found: dict[str, Target] = {}
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name in _NOT_TARGETS or info.name.startswith("_"):
            continue
        target = getattr(importlib.import_module(f"{__package__}.{info.name}"), "TARGET", None)
        if isinstance(target, Target):
            if target.name in found:
                raise TargetError(f"two targets are named {target.name!r}")
            found[target.name] = target
    return dict(sorted(found.items()))


TARGETS: dict[str, Target] = _discover()


def get_target(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise TargetError(f"unknown target {name!r}; known targets: {', '.join(TARGETS)}") from None
