"""Typed access to the keys of a parsed JSON document, with errors that name the file and the dotted key."""

from __future__ import annotations

from pathlib import Path

from .errors import BundleError

_MISSING = object()


class Reader:
    def __init__(self, path: Path):
        self.path = path

    def obj(self, value, where: str) -> dict:
        if not isinstance(value, dict):
            raise BundleError(f"{self.path}: {'top level' if not where else repr(where)} must be a JSON object")
        return value

    def get(self, d: dict, key: str, kind: type, where: str = "", default=_MISSING):
        dotted = f"{where}.{key}" if where else key
        if key not in d or (d[key] is None and default is None):
            if default is not _MISSING:
                return default
            raise BundleError(f"{self.path}: missing key {dotted!r}")
        value = d[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BundleError(f"{self.path}: {dotted!r} must be {kind.__name__}, got {type(value).__name__}")
        return value

    def int_list(self, d: dict, key: str, where: str = "", nullable: bool = False) -> list:
        values = self.get(d, key, list, where)
        for v in values:
            if not ((nullable and v is None) or (isinstance(v, int) and not isinstance(v, bool))):
                raise BundleError(f"{self.path}: '{where}.{key}' must hold integers{' or null' * nullable}, "
                                  f"got {v!r}")
        return values

    def str_list(self, d: dict, key: str, where: str = "", default=_MISSING) -> list[str]:
        values = self.get(d, key, list, where, default=default)
        if not all(isinstance(v, str) for v in values):
            raise BundleError(f"{self.path}: '{(where + '.') if where else ''}{key}' must hold strings")
        return values

    def only(self, d: dict, known, where: str) -> None:
        """Refuse keys of `d` (the object at `where`) that the format does not define."""
        extra = sorted(set(d) - set(known))
        if extra:
            raise BundleError(f"{self.path}: {where!r} has {extra}, which format_version 2 does not define; "
                              f"known: {sorted(known)}")
