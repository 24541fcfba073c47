"""Open a gpt-oss checkpoint (Hugging Face, OpenAI's original/, or dense HF), validated from headers only.

    ckpt = Checkpoint.open("gpt-oss-20b")           # HF root; `layout="original"` picks original/
    ckpt.config, ckpt.layout                        # ModelConfig, "hf" | "original" | "hf-dense"
    for name in ckpt.canonical_names():             # model order, names as in layout.py
        w = ckpt.read(name)                         # np.ndarray (a read-only memmap when zero-copy)

`open` reads config.json and the safetensors headers, never tensor data, and checks everything the
headers can tell: every expected tensor present, none extra, shapes and dtypes as config.json says,
MXFP4 blocks and scales consistent, files not truncated. `read` checks what only the data can tell, on the
tensor it is about to hand out (so while an export streams, with no pass of its own over the checkpoint):
no NaN or infinity in a float tensor, no NaN scale byte. Any problem is a `CheckpointError` naming the file
and the tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import ModelConfig, load_json
from .errors import CheckpointError
from .layout import LAYOUTS, Source, layer_of, sources
from .safetensors_io import SafetensorsFile, TensorInfo

HF_INDEX = "model.safetensors.index.json"
HF_SINGLE = "model.safetensors"
ORIGINAL = "original"
TOKENIZER = "tokenizer.json"
# original/dtypes.json names -> the safetensors dtype they are stored as.
_ORIGINAL_DTYPES = {"BF16": "BF16", "FP4": "U8", "UE8": "U8", "U8": "U8"}
_MAX_LISTED = 8
# safetensors float dtype -> (unsigned integer of its width, exponent mask, masked bits of NaN and infinity).
# Testing bits is exact for every float format and needs no float temporaries.
_NON_FINITE_BITS: dict[str, tuple[type, int, int]] = {
    "BF16": (np.uint16, 0x7F80, 0x7F80),
    "F16": (np.uint16, 0x7C00, 0x7C00),
    "F32": (np.uint32, 0x7F80_0000, 0x7F80_0000),
    "F64": (np.uint64, 0x7FF0_0000_0000_0000, 0x7FF0_0000_0000_0000),
    "F8_E4M3": (np.uint8, 0x7F, 0x7F),          # e4m3fn has no infinity; S.1111.111 is NaN
    "F8_E5M2": (np.uint8, 0x7C, 0x7C),
}
_FINITE_CHUNK = 1 << 22                          # elements tested at a time: 8 MB of bf16, a few MB of temporaries


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names) - _MAX_LISTED} more)" if len(names) > _MAX_LISTED else "")


@dataclass(frozen=True)
class _Located:
    file: SafetensorsFile
    info: TensorInfo


class Checkpoint:
    """A validated checkpoint. Build it with `Checkpoint.open`."""

    def __init__(self, path: Path, weights_dir: Path, layout: str, config: ModelConfig,
                 tensors: dict[str, _Located], where: str):
        self.path = path                  # the folder the user named
        self.weights_dir = weights_dir    # the folder holding config.json and the safetensors files
        self.layout = layout
        self.config = config
        self._tensors = tensors           # file key -> where it is
        self._where = where               # the file (or index) to name when a tensor is missing
        self._sources = {src.canonical: src for src in sources(config, layout)}
        self._finite: set[str] = set()    # file keys whose values were found finite
        validate(self)

    # -------------------------------------------------------------------- opening
    @classmethod
    def open(cls, path: str | Path, layout: str | None = None) -> "Checkpoint":
        """Open `path`: a HF checkpoint folder, the folder holding `original/`, or `original/` itself.

        `layout=None` detects it; a folder with both a HF root and `original/` opens as HF.
        """
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"{path}: {'not a folder' if path.exists() else 'no such folder'}")
        if layout is not None and layout not in LAYOUTS:
            raise CheckpointError(f"unknown layout {layout!r}; known: {list(LAYOUTS)}")
        root_cfg = _read_config(path / "config.json") if (path / "config.json").is_file() else None
        root_is_hf = root_cfg is not None and ("model_type" in root_cfg or "num_local_experts" in root_cfg)
        if layout == "original" or (layout is None and not root_is_hf):
            if (path / ORIGINAL / "config.json").is_file():
                return cls._open_original(path, path / ORIGINAL)
            if root_cfg is not None and not root_is_hf:
                return cls._open_original(path, path)
            raise CheckpointError(f"{path}: no checkpoint here: expected config.json (Hugging Face layout) "
                                  f"or {ORIGINAL}/config.json (original layout)")
        if not root_is_hf:
            raise CheckpointError(f"{path}: no Hugging Face config.json here (asked for layout {layout!r})")
        return cls._open_hf(path, root_cfg, layout)

    @classmethod
    def _open_hf(cls, path: Path, raw: dict, layout: str | None) -> "Checkpoint":
        config = ModelConfig.from_hf(raw, source=str(path / "config.json"))
        quant = raw.get("quantization_config")
        found = "hf" if isinstance(quant, dict) and quant.get("quant_method") == "mxfp4" else "hf-dense"
        if layout is not None and layout != found:
            raise CheckpointError(f"{path / 'config.json'}: asked for layout {layout!r}, but the config says "
                                  f"{found!r} ({'MXFP4' if found == 'hf' else 'no MXFP4'} quantization_config)")
        if (path / HF_INDEX).is_file():
            files, where = _files_from_index(path), path / HF_INDEX
        elif (path / HF_SINGLE).is_file():
            files, where = {path / HF_SINGLE: None}, path / HF_SINGLE
        else:
            raise CheckpointError(f"{path}: no {HF_SINGLE} nor {HF_INDEX}")
        tensors = _locate(files)
        return cls(path, path, found, config, tensors, str(where))

    @classmethod
    def _open_original(cls, path: Path, folder: Path) -> "Checkpoint":
        cfg_path = folder / "config.json"
        config = ModelConfig.from_original(_read_config(cfg_path), source=str(cfg_path))
        # OpenAI's reference loader reads every *.safetensors file of the folder; so do we.
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"{folder}: no .safetensors files")
        tensors = _locate({f: None for f in files})
        ckpt = cls(path, folder, "original", config, tensors, str(files[0] if len(files) == 1 else folder))
        if (folder / "dtypes.json").is_file():
            _check_dtypes_json(folder / "dtypes.json", tensors)
        return ckpt

    # ----------------------------------------------------------------- properties
    @property
    def dense_experts(self) -> bool:
        return self.layout == "hf-dense"

    @property
    def tokenizer_path(self) -> Path | None:
        """tokenizer.json beside the weights, or in the parent of an `original/` folder."""
        for folder in (self.weights_dir, self.path, self.weights_dir.parent):
            if (folder / TOKENIZER).is_file():
                return folder / TOKENIZER
        return None

    @property
    def has_tokenizer(self) -> bool:
        return self.tokenizer_path is not None

    @property
    def files(self) -> list[Path]:
        return sorted({loc.file.path for loc in self._tensors.values()})

    @property
    def inputs(self) -> list[Path]:
        """Every folder and file an export reads (an output must not replace, hold or lie inside any of them)."""
        return [self.path, self.weights_dir, *self.files] + ([self.tokenizer_path] if self.has_tokenizer else [])

    def canonical_names(self) -> list[str]:
        """Every canonical tensor name, in model order."""
        return list(self._sources)

    def layer_names(self, layer: int) -> list[str]:
        if not 0 <= layer < self.config.num_hidden_layers:
            raise CheckpointError(f"layer {layer} out of range: the model has {self.config.num_hidden_layers}")
        return [name for name in self._sources if layer_of(name) == layer]

    def source(self, name: str) -> Source:
        try:
            return self._sources[name]
        except KeyError:
            raise CheckpointError(f"{self.weights_dir}: no canonical tensor {name!r} in a {self.layout} "
                                  f"checkpoint; e.g. {_listing(list(self._sources))}") from None

    # ------------------------------------------------------------------- reading
    def release_pages(self) -> None:
        """Let go of the resident pages of every file read so far (see SafetensorsFile.release_pages)."""
        for st in {id(loc.file): loc.file for loc in self._tensors.values()}.values():
            st.release_pages()

    def read(self, name: str) -> np.ndarray:
        """Canonical tensor `name` (layout.py). A read-only memmap view when one file key holds it.

        q/k/v are concatenated (a copy); dense experts are a transposed, non-contiguous view.
        """
        src = self.source(name)
        arrays = [self._get_finite(ft.key) for ft in src.keys]
        if src.combine == "concat0":
            out = np.concatenate(arrays, axis=0)
            out.flags.writeable = False
        elif src.combine == "swap_last2":
            out = np.swapaxes(arrays[0], -1, -2)
        else:
            out = arrays[0]
        if name.endswith(".scales"):
            _check_scales(out, self._tensors[src.keys[0].key], src.keys[0].key)
        return out

    def _get_finite(self, key: str) -> np.ndarray:
        """File tensor `key`, refused if it holds NaN or infinity (checked once per key, chunk by chunk)."""
        loc = self._tensors[key]
        array = loc.file.get(key)
        if key not in self._finite and loc.info.dtype in _NON_FINITE_BITS:
            _check_finite(array, loc, key)
            self._finite.add(key)
        return array

    def read_torch(self, name: str, dtype=None):
        """`read(name)` as a (copied, contiguous) torch tensor, optionally cast to `dtype`."""
        import torch

        arr = self.read(name)
        if arr.dtype.name == "bfloat16":
            t = torch.from_numpy(np.ascontiguousarray(arr).view(np.uint16).copy()).view(torch.bfloat16)
        else:
            t = torch.from_numpy(np.array(arr, copy=True))
        return t if dtype is None else t.to(dtype)

    def __repr__(self) -> str:
        return f"Checkpoint({str(self.path)!r}, layout={self.layout!r}, {len(self._sources)} tensors)"


# -------------------------------------------------------------------------- helpers
def _read_config(path: Path) -> dict:
    d = load_json(path)
    if not isinstance(d, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return d


def _files_from_index(root: Path) -> dict[Path, list[str]]:
    """Shard file -> the keys the index puts in it.

    An entry's file NAME must stay inside `root` (relative, no `..`); the file it names may be a symlink to
    anywhere, as every file of a Hugging Face cache snapshot is (snapshots/REV/NAME -> ../../blobs/HASH)."""
    index_path = root / HF_INDEX
    index = load_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index_path}: no 'weight_map' object")
    files: dict[Path, list[str]] = {}
    for key, fname in weight_map.items():
        if not isinstance(fname, str) or not fname:
            raise CheckpointError(f"{index_path}: entry {key!r}: file name {fname!r} is not a string")
        rel = Path(fname)
        if rel.is_absolute() or rel.drive or ".." in rel.parts or "\\" in fname:
            raise CheckpointError(f"{index_path}: entry {key!r} points outside the checkpoint folder: {fname!r}")
        try:
            found = (root / rel).is_file()
        except OSError as e:        # a name too long, no permission
            raise CheckpointError(f"{index_path}: entry {key!r}: file {fname[:60]!r} cannot be opened "
                                  f"({e.strerror or e})") from None
        if not found:
            raise CheckpointError(f"{index_path}: entry {key!r}: file {fname!r} not found")
        files.setdefault(root / rel, []).append(key)
    return files


def _locate(files: dict[Path, list[str] | None]) -> dict[str, _Located]:
    """Parse every file's header; key -> (file, info). `files` maps a file to the keys an index promises."""
    out: dict[str, _Located] = {}
    for path, promised in files.items():
        st = SafetensorsFile(path)
        for key in promised or ():
            if key not in st:
                raise CheckpointError(f"{path}: no tensor {key!r}, though {HF_INDEX} says it is here")
        for key, info in st.tensors.items():
            if promised is not None and key not in promised:
                continue  # the index puts this key elsewhere; HF readers follow the index
            if key in out:
                raise CheckpointError(f"tensor {key!r} is in both {out[key].file.path} and {path}")
            out[key] = _Located(st, info)
    return out


def validate(ckpt: Checkpoint) -> None:
    """Header-only checks of every tensor against config.json (see the module docstring)."""
    cfg_name = "config.json" if ckpt.layout != "original" else f"{ORIGINAL}/config.json"
    expected = {ft.key: ft for src in ckpt._sources.values() for ft in src.keys}
    missing = [key for key in expected if key not in ckpt._tensors]
    if missing:
        hint = ""
        if ckpt.dense_experts and any(k.endswith("_blocks") for k in ckpt._tensors):
            hint = " (config.json has no MXFP4 quantization_config, so dense expert weights are expected)"
        raise CheckpointError(f"{ckpt._where}: missing {len(missing)} tensors expected by {cfg_name}: "
                              f"{_listing(missing)}{hint}")
    extra = [key for key in ckpt._tensors if key not in expected]
    if extra:
        files = sorted({str(ckpt._tensors[k].file.path) for k in extra})
        raise CheckpointError(f"{', '.join(files)}: {len(extra)} unexpected tensors: {_listing(extra)}")
    for src in ckpt._sources.values():
        if src.canonical.endswith(".blocks"):
            _check_mxfp4_pair(ckpt, src)
        for ft in src.keys:
            loc = ckpt._tensors[ft.key]
            if (loc.info.shape, loc.info.dtype) != (ft.shape, ft.dtype):
                raise CheckpointError(
                    f"{loc.file.path}: tensor {ft.key!r}: {cfg_name} implies shape {list(ft.shape)} {ft.dtype}, "
                    f"the file has {list(loc.info.shape)} {loc.info.dtype}")


def _check_mxfp4_pair(ckpt: Checkpoint, blocks_src: Source) -> None:
    scales_name = blocks_src.canonical[:-len("blocks")] + "scales"
    b_key, s_key = blocks_src.keys[0].key, ckpt._sources[scales_name].keys[0].key
    b, s = ckpt._tensors[b_key].info, ckpt._tensors[s_key].info
    if not b.shape or b.shape[-1] != 16 or s.shape != b.shape[:-1]:
        raise CheckpointError(
            f"{ckpt._tensors[b_key].file.path}: MXFP4 tensors {b_key!r} {list(b.shape)} and {s_key!r} "
            f"{list(s.shape)} disagree: blocks need a last dim of 16 and scales the blocks' shape without it")


def _check_scales(scales: np.ndarray, loc: _Located, key: str) -> None:
    bad = np.flatnonzero(np.asarray(scales).reshape(-1) == 255)
    if bad.size:
        where = tuple(int(i) for i in np.unravel_index(bad[0], scales.shape))
        raise CheckpointError(f"{loc.file.path}: tensor {key!r}: {bad.size} scale bytes are 255 (NaN in the "
                              f"OCP MX spec), first at index {list(where)}")


def _check_finite(array: np.ndarray, loc: _Located, key: str) -> None:
    uint, mask, bits = _NON_FINITE_BITS[loc.info.dtype]
    flat = array.reshape(-1).view(uint)
    for start in range(0, flat.size, _FINITE_CHUNK):
        bad = (flat[start:start + _FINITE_CHUNK] & uint(mask)) == uint(bits)
        if bad.any():
            at = start + int(np.argmax(bad))
            where = [int(i) for i in np.unravel_index(at, array.shape)]
            value = float(array.reshape(-1)[at])
            kind = "NaN" if value != value else "-infinity" if value < 0 else "infinity"
            raise CheckpointError(f"{loc.file.path}: tensor {key!r} holds {kind} at index {where} (a model with it "
                                  f"computes NaN logits); the file is damaged or was saved from a diverged run")


def _check_dtypes_json(path: Path, tensors: dict[str, _Located]) -> None:
    dtypes = load_json(path)
    if not isinstance(dtypes, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    for key, name in dtypes.items():
        if key not in tensors:
            continue  # a listing of more than this file holds is harmless
        stored = tensors[key].info.dtype
        if (_ORIGINAL_DTYPES.get(name) if isinstance(name, str) else None) != stored:
            raise CheckpointError(f"{path}: tensor {key!r} is listed as {name!r}, "
                                  f"but {tensors[key].file.path} stores it as {stored}")


def mxfp4_reader(ckpt: Checkpoint):
    """A reader of canonical tensors that serves MXFP4 experts even from dense checkpoints (re-encoded, one
    tensor pair at a time)."""
    if not ckpt.dense_experts:
        return ckpt.read
    from gptoss.quant.mxfp4 import encode_mxfp4

    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def read(name: str) -> np.ndarray:
        if name.endswith((".blocks", ".scales")):
            base = name.rsplit(".", 1)[0]
            if base not in cache:
                cache.clear()
                w = np.asarray(ckpt.read(base + ".weight"), dtype=np.float32)
                cache[base] = encode_mxfp4(w, name=base + ".weight")
            blocks, scales = cache[base]
            return blocks if name.endswith(".blocks") else scales
        return ckpt.read(name)

    return read
