"""A small safetensors reader (lazy, validated, zero-copy) and a streaming writer. numpy + json only.

File format (https://github.com/huggingface/safetensors):

    [8 bytes: N, little-endian u64] [N bytes: JSON header, space padded] [data region]
    header = {"__metadata__": {str: str}, key: {"dtype": "BF16", "shape": [..], "data_offsets": [begin, end]}, ...}

Offsets are relative to the start of the data region. Tensors are C-contiguous and little-endian.
The reader holds files to the spec's rules: no key twice in the header, and tensors that tile the data region
exactly (no overlap, no hole between tensors, nothing after the last one).
The reader returns read-only `np.memmap` views: nothing is read until a tensor's bytes are touched.
The writer knows every (key, shape, dtype) up front, writes the header first and then streams the
tensors in order, so its peak memory is one tensor (or one chunk of rows of one).
"""

from __future__ import annotations

import json
import mmap
import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np

from .errors import CheckpointError

# safetensors dtype name -> numpy dtype (little-endian).
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("u1"), "I8": np.dtype("i1"),
    "U16": np.dtype("<u2"), "I16": np.dtype("<i2"),
    "U32": np.dtype("<u4"), "I32": np.dtype("<i4"),
    "U64": np.dtype("<u8"), "I64": np.dtype("<i8"),
    "F16": np.dtype("<f2"), "F32": np.dtype("<f4"), "F64": np.dtype("<f8"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}

# The safetensors library refuses headers above 100 MB; so do we, before allocating them.
MAX_HEADER_BYTES = 100_000_000


def dtype_name(dtype) -> str:
    """The safetensors name of a numpy dtype (or a safetensors name, returned as is)."""
    if isinstance(dtype, str) and dtype in DTYPES:
        return dtype
    dt = np.dtype(dtype)
    for name, known in DTYPES.items():
        if known == dt:
            return name
    raise CheckpointError(f"dtype {dt} has no safetensors equivalent; known: {sorted(DTYPES)}")


@dataclass(frozen=True)
class TensorInfo:
    """One tensor of a safetensors header. `begin`/`end` are absolute byte offsets in the file."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


class SafetensorsFile:
    """A parsed, validated safetensors header plus lazy access to the tensors it describes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.metadata, self.tensors = _parse_header(self.path)
        self._mmap: np.memmap | None = None

    def keys(self) -> list[str]:
        return list(self.tensors)

    def __contains__(self, key: str) -> bool:
        return key in self.tensors

    def info(self, key: str) -> TensorInfo:
        try:
            return self.tensors[key]
        except KeyError:
            raise CheckpointError(f"{self.path}: no tensor {key!r}") from None

    def get(self, key: str) -> np.ndarray:
        """Tensor `key` as a read-only memmap view (zero copy, nothing read yet)."""
        info = self.info(key)
        dtype = DTYPES[info.dtype]
        if info.nbytes == 0:
            out = np.empty(info.shape, dtype)
            out.flags.writeable = False
            return out
        if self._mmap is None:
            self._mmap = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._mmap[info.begin:info.end].view(dtype).reshape(info.shape)

    def release_pages(self) -> None:
        """Drop this process's resident pages of the mapping (they stay in the OS page cache).

        Streaming a 13 GB checkpoint through one long-lived mapping would otherwise leave every page
        read so far counted in the process's RSS. Views handed out stay valid: pages fault back in.
        """
        if self._mmap is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mmap._mmap.madvise(mmap.MADV_DONTNEED)

    def __repr__(self) -> str:
        return f"SafetensorsFile({str(self.path)!r}, {len(self.tensors)} tensors)"


def _parse_header(path: Path) -> tuple[dict[str, str], dict[str, TensorInfo]]:
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated: {size} bytes, not even the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: not a safetensors file (header length {n} bytes)")
            if 8 + n > size:
                raise CheckpointError(f"{path}: truncated: the header needs bytes up to {8 + n} "
                                      f"but the file has {size}")
            raw = f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise CheckpointError(f"{path}: is a folder, not a safetensors file") from None
    if not raw.startswith(b"{"):
        raise CheckpointError(f"{path}: header is not a JSON object (it must begin with '{{')")
    try:
        header = json.loads(raw, object_pairs_hook=_unique_keys(path))
    except ValueError as e:         # JSONDecodeError, UnicodeDecodeError, an integer past 4300 digits
        raise CheckpointError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: header is not a JSON object")

    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path}: __metadata__ is not a JSON object")
    data_start = 8 + n
    tensors: dict[str, TensorInfo] = {}
    for key, entry in header.items():
        tensors[key] = _parse_entry(path, key, entry, data_start, size)

    _check_tiling(path, tensors, data_start, size)
    return metadata, tensors


def _unique_keys(path: Path):
    """A json `object_pairs_hook` refusing a key twice in one object (the spec: "Duplicate keys are disallowed";
    json.loads would keep the last one silently, another reader the first)."""
    def pairs_to_dict(pairs: list[tuple[str, object]]) -> dict:
        out = {}
        for key, value in pairs:
            if key in out:
                raise CheckpointError(f"{path}: the header holds the key {key!r} twice")
            out[key] = value
        return out
    return pairs_to_dict


def _check_tiling(path: Path, tensors: dict[str, TensorInfo], data_start: int, size: int) -> None:
    """The tensors must tile the data region exactly: in offset order each begins where the one before ends, the
    first at the region's start, the last at the file's end (the spec: "The byte buffer needs to be entirely
    indexed, and cannot contain holes", which keeps other data, a second file format say, out of the file)."""
    at, before = data_start, None
    for t in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if t.begin < at:
            raise CheckpointError(f"{path}: tensors {before!r} and {t.key!r} overlap in the file")
        if t.begin > at:
            where = f"between tensors {before!r} and {t.key!r}" if before else f"before the first tensor {t.key!r}"
            raise CheckpointError(f"{path}: {t.begin - at} bytes {where} belong to no tensor (the safetensors "
                                  f"format allows no holes)")
        at, before = t.end, t.key
    if at != size:
        last = f"the last tensor {before!r}" if before else "the header (the file holds no tensors)"
        raise CheckpointError(f"{path}: {size - at} trailing bytes after {last} belong to no tensor "
                              f"(the safetensors format allows no holes)")


def _parse_entry(path: Path, key: str, entry, data_start: int, size: int) -> TensorInfo:
    where = f"{path}: tensor {key!r}"
    if not isinstance(entry, dict):
        raise CheckpointError(f"{where}: header entry is not a JSON object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CheckpointError(f"{where}: unknown dtype {dtype!r}; known: {sorted(DTYPES)}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):     # not a bool
        raise CheckpointError(f"{where}: malformed shape {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
            or not 0 <= offsets[0] <= offsets[1]):
        raise CheckpointError(f"{where}: malformed data_offsets {offsets!r}")
    expected = math.prod(shape) * DTYPES[dtype].itemsize
    if offsets[1] - offsets[0] != expected:
        raise CheckpointError(f"{where}: data_offsets {offsets} span {offsets[1] - offsets[0]} bytes, "
                              f"but shape {shape} of {dtype} needs {expected}")
    begin, end = data_start + offsets[0], data_start + offsets[1]
    if end > size:
        raise CheckpointError(f"{path}: truncated: tensor {key!r} needs bytes up to {end} but the file has {size}")
    return TensorInfo(key, dtype, tuple(shape), begin, end)


class SafetensorsWriter:
    """Stream tensors into a safetensors file whose (key, shape, dtype) list is known up front.

        with SafetensorsWriter(path, [("a", (2, 3), "BF16"), ("b", (4,), "U8")]) as w:
            w.write("a", a)                    # whole tensor
            w.write_rows("b", [b[:2], b[2:]])  # or consecutive chunks of rows (dim 0)

    Tensors must come in the order of `specs`. Closing before all were written is an error.
    """

    def __init__(self, path: str | Path, specs: Sequence[tuple[str, Sequence[int], str]],
                 metadata: dict[str, str] | None = None):
        self.path = Path(path)
        self.specs = [(key, tuple(int(d) for d in shape), dtype_name(dtype)) for key, shape, dtype in specs]
        keys = [key for key, _, _ in self.specs]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise CheckpointError(f"{self.path}: duplicate tensor keys {dup}")
        header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
        offset = 0
        for key, shape, dtype in self.specs:
            nbytes = math.prod(shape) * DTYPES[dtype].itemsize
            header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        self.data_bytes = offset
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # align the data region to 8 bytes, as the safetensors library does
        self._file = open(self.path, "wb")
        self._file.write(struct.pack("<Q", len(raw)) + raw)
        self._next = 0

    # ------------------------------------------------------------------ writing
    def write(self, key: str, array: np.ndarray) -> None:
        self.write_rows(key, [array])

    def write_rows(self, key: str, chunks: Iterable[np.ndarray]) -> None:
        """Write tensor `key` from consecutive chunks of its rows (dim 0); a 0-d tensor is one chunk."""
        if self._next >= len(self.specs):
            raise CheckpointError(f"{self.path}: tensor {key!r} written after all {len(self.specs)} declared ones")
        want_key, shape, dtype = self.specs[self._next]
        if key != want_key:
            raise CheckpointError(f"{self.path}: tensor {key!r} written out of order; expected {want_key!r}")
        start = self._file.tell()
        try:
            self._write_chunks(f"{self.path}: tensor {key!r}", shape, dtype, chunks)
        except BaseException:
            self._file.seek(start)  # forget a partly written tensor, so that it can be written again
            self._file.truncate()
            raise
        self._next += 1

    def _write_chunks(self, where: str, shape: tuple[int, ...], dtype: str, chunks: Iterable[np.ndarray]) -> None:
        rows = 0
        for chunk in chunks:
            chunk = np.asarray(chunk)
            if dtype_name(chunk.dtype) != dtype:
                raise CheckpointError(f"{where}: got dtype {dtype_name(chunk.dtype)}, declared {dtype}")
            if not shape:
                if chunk.shape != () or rows:
                    raise CheckpointError(f"{where}: got shape {chunk.shape}, declared ()")
                rows = 1
            elif chunk.shape[1:] != shape[1:] or rows + chunk.shape[0] > shape[0]:
                raise CheckpointError(f"{where}: got rows {rows}..{rows + chunk.shape[0]} of shape "
                                      f"{chunk.shape}, declared shape {shape}")
            else:
                rows += chunk.shape[0]
            self._file.write(np.ascontiguousarray(chunk).reshape(-1).view(np.uint8))
        if rows != (shape[0] if shape else 1):
            raise CheckpointError(f"{where}: got {rows} rows, declared shape {shape}")

    # ---------------------------------------------------------------- closing
    def close(self) -> None:
        if self._file.closed:
            return
        self._file.close()
        if self._next != len(self.specs):
            missing = [key for key, _, _ in self.specs[self._next:]]
            raise CheckpointError(f"{self.path}: closed with {len(missing)} tensors unwritten, "
                                  f"first {missing[0]!r}")

    def __enter__(self) -> "SafetensorsWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._file.close()
