"""Calibrate an int8 KV cache: measure each layer's per-channel key and value ranges on a calibration prompt and
write the scales the graph's quantized GroupQueryAttention nodes read (targets/passes/attention.py).

    calibrate_int8_cache(bundle_dir, "model.onnx", kv_contract, token_ids)

How, in a bundle just written (before its manifest): a twin of the graph with a float32 cache (the same nodes, the
quantization attributes and scale inputs dropped) runs the prompt in chunks through ONNX Runtime with shared
buffers, the way the runtime does. After every chunk each layer's buffers are read:

    keys    the cache holds them after rotary. A rotation moves magnitude between channel c and c + head_dim/2, never
            out of the pair, so both get the pair's largest norm sqrt(k_c^2 + k_{c+hd/2}^2): a key that the prompt
            saw at one position cannot clip at another.
    values  the largest |v| per channel, times VALUE_MARGIN (headroom for values the prompt did not reach).

scale = range / 127; the scale constants' bytes are overwritten in place in the weights file (they were written
as ones). The calibration prompt: CALIBRATION_TEXT through the bundle's tokenizer, or seeded random ids when the
bundle has none (a synthetic model with a small vocabulary).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto

from gptoss.bundle import names
from gptoss.bundle.kv import KVContract
from gptoss.targets.passes.attention import INT8_CACHE, cache_scale_names, retype_cache_io

from gptoss.export.errors import ExportError

CHUNK = 128                   # tokens per call: a sliding layer's window cache (2 x window) holds a whole chunk
MAX_TOKENS = 512
VALUE_MARGIN = 2.0          # measured on the tiny model: 1.0 -> rel 5.9e-2, 1.25 -> 4.1e-2, 2.0 -> 3.1e-2 (clipping costs more than steps)
INT8_MAX = 127.0

CALIBRATION_TEXT = """<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.
Knowledge cutoff: 2024-06
Reasoning: medium
# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|><|start|>user<|message|>Explain why the sky is blue, then write a Python function that sorts a list of tuples by their second element.<|end|><|start|>assistant<|channel|>analysis<|message|>The user wants an explanation of Rayleigh scattering and a short code sample. Scattering intensity scales with 1/lambda^4, so blue light (about 450 nm) scatters roughly 5.5 times more than red light (about 700 nm).<|end|><|start|>assistant<|channel|>final<|message|>Sunlight contains every visible wavelength. Air molecules are much smaller than those wavelengths, so they scatter light by Rayleigh scattering, whose strength grows as the inverse fourth power of the wavelength: blue is scattered far more than red and reaches your eyes from every direction of the sky.

```python
def sort_by_second(pairs: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return sorted(pairs, key=lambda pair: pair[1])
```

Example: sort_by_second([("a", 3), ("b", 1), ("c", 2)]) returns [("b", 1), ("c", 2), ("a", 3)].<|end|><|start|>user<|message|>Merci ! Et pourquoi le coucher de soleil est-il rouge ? 日本語でも短く説明してください。<|end|><|start|>assistant<|channel|>final<|message|>Au coucher du soleil, la lumière traverse beaucoup plus d'atmosphère : le bleu est diffusé en chemin et il reste surtout le rouge et l'orange. 夕方は光が大気を長く通るため、青い光が散乱されて赤い光が残ります。
| wavelength (nm) | colour | relative scattering |
|---|---|---|
| 450 | blue | 5.5 |
| 550 | green | 2.6 |
| 700 | red | 1.0 |
SELECT name, COUNT(*) FROM orders WHERE created_at >= '2024-01-01' GROUP BY name ORDER BY 2 DESC LIMIT 10;
for (int i = 0; i < n; ++i) { total += weights[i] * values[i]; }
The integral of x^2 from 0 to 3 is 9, and e^(i*pi) + 1 = 0.<|end|>"""


def calibration_ids(tokenizer_dir: Path | None, vocab_size: int, seed: int = 0) -> list[int]:
    """The calibration prompt's ids: CALIBRATION_TEXT (repeated up to MAX_TOKENS) through the bundle's tokenizer,
    else seeded random ids below `vocab_size`."""
    if tokenizer_dir is None:
        return np.random.default_rng(seed).integers(0, vocab_size, MAX_TOKENS).tolist()
    from gptoss.bundle.tokenizer import load_encoding

    ids = load_encoding(tokenizer_dir).encode(CALIBRATION_TEXT, allowed_special="all")
    return (ids * (MAX_TOKENS // len(ids) + 1))[:MAX_TOKENS]


def calibrate_int8_cache(bundle_dir: Path, graph_file: str, kv: KVContract, token_ids: list[int]) -> dict:
    """Measure the ranges, overwrite the scale constants in the weights file. Returns {layer: (k_scale, v_scale)}."""
    model = onnx.load(str(bundle_dir / graph_file), load_external_data=False)
    twin_path = bundle_dir / f".calibration-{os.getpid()}.onnx"
    onnx.save(_float_cache_twin(model, kv.num_layers), str(twin_path))
    try:
        key_range, value_range = _ranges(twin_path, kv, token_ids)
    finally:
        twin_path.unlink(missing_ok=True)
    scales = {}
    for i in range(kv.num_layers):
        k_scale = np.maximum(key_range[i], 1e-6) / INT8_MAX
        v_scale = np.maximum(value_range[i] * VALUE_MARGIN, 1e-6) / INT8_MAX
        scales[i] = (k_scale.reshape(-1).astype(np.float32), v_scale.reshape(-1).astype(np.float32))
    _overwrite(bundle_dir, model, {name: scale for i, pair in scales.items()
                                   for name, scale in zip(cache_scale_names(i), pair)})
    return scales


def _float_cache_twin(model: onnx.ModelProto, layers: int) -> onnx.ModelProto:
    """The same graph over a float32 cache: quantization attributes and the two scale inputs dropped."""
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    for node in twin.graph.node:
        if node.op_type == "GroupQueryAttention" and any(a.name in INT8_CACHE for a in node.attribute):
            kept = [a for a in node.attribute if a.name not in INT8_CACHE]
            del node.attribute[:]
            node.attribute.extend(kept)
            del node.input[12:]                                  # k_scale, v_scale
    scales = {name for i in range(layers) for name in cache_scale_names(i)}
    kept = [t for t in twin.graph.initializer if t.name not in scales]
    del twin.graph.initializer[:]
    twin.graph.initializer.extend(kept)
    retype_cache_io([*twin.graph.input, *twin.graph.output], layers, TensorProto.FLOAT)
    return twin


def _ranges(model_path: Path, kv: KVContract, token_ids: list[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per layer: the keys' largest rotary-pair norm [kv, hd/2] and the values' largest |v| [kv, hd]."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    n, half = len(token_ids), kv.head_dim // 2
    buffers = [tuple(np.zeros((1, kv.num_kv_heads, cap or n + 1, kv.head_dim), np.float32) for _ in range(2))
               for cap in kv.capacity]
    key_range = [np.zeros((kv.num_kv_heads, half), np.float32) for _ in buffers]
    value_range = [np.zeros((kv.num_kv_heads, kv.head_dim), np.float32) for _ in buffers]
    for start in range(0, n, CHUNK):
        ids = np.array([token_ids[start:start + CHUNK]], np.int64)
        binding = session.io_binding()
        feeds = {names.INPUT_IDS: ids, names.POSITION_IDS: np.arange(start, start + ids.shape[1])[None],
                 names.LOGITS_FROM: np.array([ids.shape[1] - 1], np.int64)}
        for name, value in feeds.items():
            if name in wanted:
                binding.bind_cpu_input(name, value)
        for i, (key, value) in enumerate(buffers):
            past_k, past_v, present_k, present_v = names.kv_names(i)
            for array, past, present in ((key, past_k, present_k), (value, past_v, present_v)):
                ort_value = ort.OrtValue.ortvalue_from_numpy(array)
                binding.bind_ortvalue_input(past, ort_value)
                binding.bind_ortvalue_output(present, ort_value)
        binding.bind_output(names.LOGITS)
        session.run_with_iobinding(binding)
        for i, (key, value) in enumerate(buffers):
            pair_norm = np.sqrt(key[0, :, :, :half] ** 2 + key[0, :, :, half:] ** 2).max(axis=1)
            key_range[i] = np.maximum(key_range[i], pair_norm)
            value_range[i] = np.maximum(value_range[i], np.abs(value[0]).max(axis=1))
    if not all(np.isfinite(r).all() for r in key_range + value_range):
        raise ExportError(f"{model_path.parent}: the calibration prompt produced non-finite keys or values")
    return [np.concatenate([r, r], axis=1) for r in key_range], value_range


def _overwrite(bundle_dir: Path, model: onnx.ModelProto, values: dict[str, np.ndarray]) -> None:
    """Overwrite external initializers' bytes in place (same dtype and size as written)."""
    protos = {t.name: t for t in model.graph.initializer if t.name in values}
    missing = sorted(set(values) - set(protos))
    if missing:
        raise ExportError(f"{bundle_dir}: the graph has no cache scale constant(s) {missing}")
    for name, array in values.items():
        info = {e.key: e.value for e in protos[name].external_data}
        data = np.ascontiguousarray(array, np.float32).tobytes()
        if int(info["length"]) != len(data):
            raise ExportError(f"{name}: {len(data)} calibrated bytes for a {info['length']}-byte constant")
        with open(bundle_dir / info["location"], "r+b") as f:
            f.seek(int(info["offset"]))
            f.write(data)
