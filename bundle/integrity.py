"""A bundle's files against the manifest's `files` listing ({relative path: {"bytes", "sha256"}}).

Every load (`check_files(manifest)`: a stat per file, and a scan of each graph's protobuf for the files it names):
    every file the runtime will read is listed: the graph parts, the files their graphs name (external data, EP
        context binaries: onnx_refs.py), the weights, the tokenizer folder's encoding.json, its ranks file and the
        manifest's tokenizer.files; an unlisted one is refused, so deleting a file's entry (or `files: {}`) does
        not skip its check;
    every listed file is inside the bundle folder (symlinks resolved), present, and of its listed size: a partial
        copy or a truncated file is refused before onnxruntime sees it.
With `verify=True` (`Model.load(..., verify=True)`, `gptoss verify BUNDLE`, `--verify`), also:
    every listed file's sha256 (reads every byte).

This protects against corruption and partial copies. It does not protect against a malicious bundle, which can
rewrite its own manifest (docs/bundle-format.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import files as _files
from .errors import BundleError
from .onnx_refs import referenced_files
from .tokenizer import ENCODING_FILE, read_encoding_spec

if TYPE_CHECKING:
    from .manifest import Manifest


@dataclass(frozen=True)
class FilesChecked:
    files: int          # listed files checked
    bytes: int          # their total size
    hashed: bool        # whether their sha256 was checked too


def check_files(manifest: "Manifest", verify: bool = False) -> FilesChecked:
    """Check the bundle's files against `manifest.files` (the module docstring); BundleError naming the file."""
    listed = _listed(manifest)
    total = sum(_check_size(manifest, path, entry) for path, entry in listed.values())
    for rel, user in _used_files(manifest).items():
        _require_listed(manifest, listed, rel, user)
    if verify:
        for path, entry in listed.values():
            _check_sha256(manifest, path, entry)
    if manifest.tokenizer is not None:
        _require_listed(manifest, listed, _ranks_file(manifest), "the tokenizer (its encoding.json's ranks_file)")
    return FilesChecked(len(listed), total, verify)


def _listed(manifest: "Manifest") -> dict[str, tuple[Path, dict]]:
    """Normalised relative path -> (the file, its entry), each confined to the bundle folder."""
    out: dict[str, tuple[Path, dict]] = {}
    where = f"{manifest.path}: 'files'"
    for rel, entry in manifest.files.items():
        key = _files.plain(rel, where).as_posix()
        if key in out:
            raise BundleError(f"{where} lists {key!r} twice")
        out[key] = (_files.confined(manifest.bundle_dir, rel, where), entry)
    return out


def _require_listed(manifest: "Manifest", listed: dict, rel: str, user: str) -> None:
    if rel not in listed:
        raise BundleError(f"{manifest.bundle_dir / rel}: used by {user} but not listed under 'files' in "
                          f"{manifest.path}: a bundle lists every file it uses, with its size and sha256")


def _check_size(manifest: "Manifest", path: Path, entry: dict) -> int:
    if not path.is_file():
        raise BundleError(f"{path}: missing (listed under 'files' in {manifest.path}): an incomplete copy of the "
                          f"bundle?")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise BundleError(f"{path}: {size} bytes, but {manifest.path} lists {entry['bytes']}: a partial copy or a "
                          f"damaged file; copy the bundle again")
    return size


def _check_sha256(manifest: "Manifest", path: Path, entry: dict) -> None:
    digest = _files.sha256(path)
    if digest != entry["sha256"]:
        raise BundleError(f"{path}: sha256 {digest} does not match {entry['sha256']} in {manifest.path}: the file is "
                          f"damaged; copy the bundle again")


def _used_files(manifest: "Manifest") -> dict[str, str]:
    """Relative path -> who uses it, for every file a load reads but the tokenizer's ranks file (_ranks_file)."""
    used: dict[str, str] = {}
    for role, graph in manifest.graphs.items():
        for part, path in zip(graph.parts, manifest.graph_paths(role)):
            rel = _files.plain(part, f"{manifest.path}: 'graphs.{role}.parts'")
            used.setdefault(rel.as_posix(), f"'graphs.{role}.parts'")
            for ref in referenced_files(path):
                where = f"{path}: {ref.what}"
                beside = (rel.parent / _files.plain(ref.location, where)).as_posix()
                _files.confined(manifest.bundle_dir, beside, where)
                used.setdefault(beside, f"{part} ({ref.what})")
    for w in manifest.weights:
        used.setdefault(_inside(manifest, w, "weights"), "'weights'")
    if manifest.tokenizer is not None:
        folder = _files.plain(manifest.tokenizer.dir, f"{manifest.path}: 'tokenizer.dir'")
        used.setdefault(_inside(manifest, (folder / ENCODING_FILE).as_posix(), "tokenizer.dir"), "the tokenizer")
        for f in manifest.tokenizer.files:
            used.setdefault(_inside(manifest, f, "tokenizer.files"), "'tokenizer.files'")
    return used


def _inside(manifest: "Manifest", rel: str, key: str) -> str:
    """`rel` normalised, once confined to the bundle folder (BundleError naming the manifest's `key` otherwise)."""
    where = f"{manifest.path}: '{key}'"
    _files.confined(manifest.bundle_dir, rel, where)
    return _files.plain(rel, where).as_posix()


def _ranks_file(manifest: "Manifest") -> str:
    """The relative path of the ranks file the tokenizer's encoding.json names, confined to the tokenizer folder."""
    folder = manifest.tokenizer_path()
    spec_path, ranks = folder / ENCODING_FILE, read_encoding_spec(folder).ranks_file
    where = f"{spec_path}: 'ranks_file'"
    _files.confined(folder, ranks, where)
    return (_files.plain(manifest.tokenizer.dir, "") / _files.plain(ranks, where)).as_posix()
