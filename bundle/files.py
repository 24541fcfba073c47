"""The files of a bundle: checksums, and paths confined to the bundle folder."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from .errors import BundleError

NAME_MAX, PATH_MAX = 255, 1024
"""The longest file name (bytes of one path component: Linux's, macOS's and Windows' limit) and the longest relative
path (bytes) a bundle may name: longer ones are refused up front, where the file system would answer with an
OSError (ENAMETOOLONG) deep inside a check."""


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def plain(rel, where: str) -> PurePosixPath:
    """`rel` as a normalised relative posix path, refused (BundleError naming `where`) unless it is a non-empty
    relative path without `..`, backslashes or NUL bytes, within NAME_MAX and PATH_MAX: the part of `confined` that
    needs no file system."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise BundleError(f"{where}: {rel!r} must be a plain relative path inside the bundle folder")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or Path(rel).is_absolute() or ".." in pure.parts:
        raise BundleError(f"{where}: {rel!r} must be a plain relative path inside the bundle folder")
    try:
        longest = max(len(part.encode("utf-8")) for part in pure.parts)
    except UnicodeEncodeError:      # a lone surrogate ("\ud800" in JSON): no file system can name it
        raise BundleError(f"{where}: {rel!r} is not a valid file name (not UTF-8 text)") from None
    if longest > NAME_MAX or len(rel.encode("utf-8")) > PATH_MAX:
        raise BundleError(f"{where}: {rel[:60]!r}... is too long (a name of at most {NAME_MAX} bytes, a path of "
                          f"at most {PATH_MAX})")
    return pure


def confined(bundle_dir: Path, rel: str, where: str) -> Path:
    """`bundle_dir / rel`, refused (BundleError naming `where`) unless `rel` is a relative path without `..`
    that stays inside the bundle folder once symlinks are resolved."""
    path = bundle_dir / plain(rel, where)
    try:
        inside = path.resolve().is_relative_to(bundle_dir.resolve())
    except (OSError, RuntimeError) as e:            # a symlink loop
        raise BundleError(f"{where}: {rel!r} cannot be resolved ({e})") from None
    if not inside:
        raise BundleError(f"{where}: {rel!r} resolves outside the bundle folder")
    return path


def listing(folder: Path, progress=None) -> dict[str, dict]:
    """{relative posix path: {"bytes", "sha256"}} of every file under `folder`; `progress(paths, total)` may
    wrap the iteration (a progress bar)."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    if progress is not None:
        paths = progress(paths, sum(p.stat().st_size for p in paths))
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in paths}
