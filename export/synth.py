"""Synthetic gpt-oss checkpoints in the exact published file layouts, deterministic and streamed.

Every canonical tensor (layout.py) is a function of (seed, canonical name) only: rows are generated in
fixed blocks, each from `np.random.default_rng([seed, crc32(name), block])`. So an `hf` and an
`original` checkpoint written with the same seed hold identical weights (HF's q/k/v are row slices of
the canonical qkv), and an `hf-dense` one holds exactly the dequantized MXFP4 experts of the others.

Statistics are chosen so that numerical tests are meaningful: unit-rms activations, attention logits
of order 1, router logits spread by ~2 (top-k well separated), sinks ~N(0, 1), and MXFP4 scales that
keep each expert matmul near unit gain.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import ml_dtypes
import numpy as np
from tqdm import tqdm

from gptoss.quant.mxfp4 import decode_mxfp4

from .config import DIMENSIONS, ModelConfig, preset
from .errors import ExportError
from .layout import LAYOUTS, FileTensor, canonical_specs, sources
from .output_folder import staged
from .safetensors_io import SafetensorsWriter
from .tokenizer_files import write_checkpoint_tokenizer_files

# As published with openai/gpt-oss-20b.
GENERATION_CONFIG = {
    "bos_token_id": 199998,
    "do_sample": True,
    "eos_token_id": [200002, 199999, 200012],
    "pad_token_id": 199999,
    "transformers_version": "4.55.0.dev0",
}

MAX_SHARD_BYTES = 4 * 2**30      # Hugging Face shards: ~4 GB each at most
FULL_VOCAB = 201088              # below this the real tokenizer does not fit the embedding
FP4_RMS = 2.93                   # rms of the 16 FP4 values (2.926), uniform nibbles; fixed: it sets the weights
_BLOCK_ELEMS = 1 << 22           # elements per generated row block (16 MB of float32)
_BF16 = np.dtype(ml_dtypes.bfloat16)


def synth_config(preset_name: str = "tiny", **dims: int | None) -> ModelConfig:
    """A preset with some dimensions overridden; keys are DIMENSIONS' flags, None means keep."""
    unknown = sorted(set(dims) - set(DIMENSIONS))
    if unknown:
        raise ExportError(f"unknown dimensions {unknown}; known: {sorted(DIMENSIONS)}")
    changes = {DIMENSIONS[k]: int(v) for k, v in dims.items() if v is not None}
    return preset(preset_name).replace(**changes)


# ------------------------------------------------------------------------------------- values
@functools.lru_cache(maxsize=8)
def _specs(cfg: ModelConfig) -> dict[str, tuple[tuple[int, ...], str]]:
    both = canonical_specs(cfg, dense_experts=False) + canonical_specs(cfg, dense_experts=True)
    return {name: (shape, dtype) for name, shape, dtype in both}


def _distribution(cfg: ModelConfig, name: str) -> tuple[str, float, float]:
    """(kind, a, b): ("normal", mean, std), ("bytes", 0, 0) or ("scales", base exponent byte, 0)."""
    H = cfg.hidden_size
    part = name.split(".", 2)[2] if name.startswith("layers.") else name
    if part in ("attn_norm", "mlp_norm", "final_norm"):
        return "normal", 1.0, 0.05
    if part.endswith(".blocks"):
        return "bytes", 0, 0
    if part.endswith(".scales"):
        k = H if part.startswith("experts.gate_up") else cfg.intermediate_size  # the matrix's input dim
        return "scales", 127 + round(math.log2(1 / (math.sqrt(k) * FP4_RMS))), 0
    if part.endswith(".bias"):
        return "normal", 0.0, 0.02
    std = {
        "embedding": 1.0,
        "sinks": 1.0,
        "qkv.weight": 1 / math.sqrt(H),
        "out.weight": 0.5 / math.sqrt(cfg.q_dim),
        "router.weight": 2 / math.sqrt(H),
        "unembedding": 2 / math.sqrt(H),
    }[part]
    return "normal", 0.0, std


def _generate(cfg: ModelConfig, name: str, seed: int, block: int, shape: tuple[int, ...]) -> np.ndarray:
    kind, a, b = _distribution(cfg, name)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode()), block])
    if kind == "bytes":
        return rng.integers(0, 255, size=shape, dtype=np.uint8, endpoint=True)
    if kind == "scales":
        return (a + rng.integers(-1, 1, size=shape, dtype=np.int16, endpoint=True)).astype(np.uint8)
    x = rng.standard_normal(shape, dtype=np.float32)
    x *= np.float32(b)
    x += np.float32(a)
    return x.astype(_BF16)


def iter_rows(cfg: ModelConfig, name: str, seed: int, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Rows [start, stop) of canonical tensor `name` as consecutive chunks (dim 0)."""
    if name not in _specs(cfg):
        raise ExportError(f"unknown canonical tensor {name!r}")
    shape, _ = _specs(cfg)[name]
    stop = shape[0] if stop is None else stop
    if name.endswith((".gate_up.weight", ".down.weight")):  # dense experts: the MXFP4 ones, decoded
        stem = name[:-len("weight")]
        for e in range(start, stop):
            blocks = canonical_rows(cfg, stem + "blocks", seed, e, e + 1)
            scales = canonical_rows(cfg, stem + "scales", seed, e, e + 1)
            yield decode_mxfp4(blocks, scales, name=name).astype(_BF16)
        return
    per = max(1, _BLOCK_ELEMS // max(1, math.prod(shape[1:])))
    for block in range(start // per, -(-stop // per)):
        r0, r1 = block * per, min(shape[0], (block + 1) * per)
        rows = _generate(cfg, name, seed, block, (r1 - r0,) + shape[1:])
        yield rows[max(start, r0) - r0:min(stop, r1) - r0]


def canonical_rows(cfg: ModelConfig, name: str, seed: int, start: int = 0, stop: int | None = None) -> np.ndarray:
    parts = list(iter_rows(cfg, name, seed, start, stop))
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def canonical_tensor(cfg: ModelConfig, name: str, seed: int = 0) -> np.ndarray:
    """The whole canonical tensor `name` of a synthetic checkpoint (what `Checkpoint.read` returns)."""
    return canonical_rows(cfg, name, seed)


# -------------------------------------------------------------------------------------- files
def _file_plan(cfg: ModelConfig, layout: str, seed: int) -> list[tuple[FileTensor, Callable[[], Iterator[np.ndarray]]]]:
    """Every file tensor of `layout`, in order, with a function streaming its rows."""
    plan = []
    for src in sources(cfg, layout):
        name = src.canonical
        if src.combine == "concat0":  # Hugging Face q/k/v: row slices of the canonical qkv
            start = 0
            for ft in src.keys:
                plan.append((ft, functools.partial(iter_rows, cfg, name, seed, start, start + ft.shape[0])))
                start += ft.shape[0]
        elif src.combine == "swap_last2":  # dense experts, stored [E, in, out]
            def swapped(name=name):
                return (np.swapaxes(rows, -1, -2) for rows in iter_rows(cfg, name, seed))
            plan.append((src.keys[0], swapped))
        else:
            plan.append((src.keys[0], functools.partial(iter_rows, cfg, name, seed)))
    return plan


def _nbytes(ft: FileTensor) -> int:
    return math.prod(ft.shape) * (2 if ft.dtype == "BF16" else 1)


def _shards(plan: list, max_bytes: int) -> list[list]:
    shards, size = [[]], 0
    for item in plan:
        n = _nbytes(item[0])
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += n
    return shards


def _write_safetensors(path: Path, items: list, bar: tqdm) -> None:
    with SafetensorsWriter(path, [(ft.key, ft.shape, ft.dtype) for ft, _ in items]) as writer:
        for ft, rows in items:
            def counted(chunks):
                for chunk in chunks:
                    yield chunk
                    bar.update(chunk.nbytes)
            writer.write_rows(ft.key, counted(rows()))


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _write_files(root: Path, cfg: ModelConfig, layout: str, seed: int, progress: bool, max_shard_bytes: int) -> None:
    plan = _file_plan(cfg, layout, seed)
    total = sum(_nbytes(ft) for ft, _ in plan)
    with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
              disable=not progress, desc=f"synth {layout}", mininterval=0.5) as bar:
        if layout == "original":
            folder = root / "original"
            folder.mkdir()
            _write_json(folder / "config.json", cfg.to_original())
            _write_json(folder / "dtypes.json", {ft.key: ("BF16" if ft.dtype == "BF16" else
                                                          "FP4" if ft.key.endswith(".blocks") else "UE8")
                                                 for ft, _ in plan})
            _write_safetensors(folder / "model.safetensors", plan, bar)
            return
        hf = cfg.to_hf()
        if layout == "hf-dense":
            del hf["quantization_config"]
        _write_json(root / "config.json", hf)
        _write_json(root / "generation_config.json", GENERATION_CONFIG)
        shards = _shards(plan, max_shard_bytes)
        if len(shards) == 1:
            _write_safetensors(root / "model.safetensors", plan, bar)
        else:
            weight_map = {}
            for k, items in enumerate(shards, 1):
                fname = f"model-{k:05d}-of-{len(shards):05d}.safetensors"
                _write_safetensors(root / fname, items, bar)
                weight_map.update({ft.key: fname for ft, _ in items})
            _write_json(root / "model.safetensors.index.json",
                        {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))})
        if cfg.vocab_size >= FULL_VOCAB:
            write_checkpoint_tokenizer_files(root)


def write_synthetic(out: str | Path, cfg: ModelConfig, layout: str = "hf", seed: int = 0, *,
                    force: bool = False, progress: bool = False, max_shard_bytes: int = MAX_SHARD_BYTES) -> Path:
    """Write a synthetic checkpoint of `cfg` in `layout` to `out`, all at once (export/output_folder.py: via a
    `.NAME.tmp-PID` sibling). `force` replaces an existing non-empty `out` only if it holds a checkpoint."""
    if layout not in LAYOUTS:
        raise ExportError(f"unknown layout {layout!r}; known: {list(LAYOUTS)}")
    if seed < 0:
        raise ExportError(f"seed must be >= 0, got {seed}")
    with staged(out, force=force, replaceable=is_checkpoint, kind="checkpoint") as tmp:
        _write_files(tmp, cfg, layout, seed, progress, max_shard_bytes)
    return Path(out)


def is_checkpoint(folder: Path) -> bool:
    """`folder` holds a gpt-oss checkpoint's config.json (either layout): what `synth --force` may replace."""
    return (folder / "config.json").is_file() or (folder / "original" / "config.json").is_file()
