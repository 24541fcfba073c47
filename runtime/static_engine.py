"""The static engine: drives a static-shape bundle (NPUs) through the same interface as the dynamic one.

    prefill  the "prefill" graph takes exactly `chunk` tokens per call: a prompt is cut into chunks, the last one
             padded (padding rows are masked out and never written to the cache)
    decode   the "decode" graph takes exactly one token
Each call binds explicit positions and the cache's masks (kv/static.py); the context holds at most the bundle's
static `context` positions.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from gptoss.bundle import names

from .engine import Engine
from .errors import BundleError
from .kv.static import StaticCache
from .kv.storage import bind_array
from .parts import Part


class StaticEngine(Engine):
    def __init__(self, sessions, manifest, max_context, prefill_chunk, placement):
        """`prefill_chunk` is the graph's own (shapes.chunk): a caller's choice does not apply."""
        super().__init__(sessions, manifest, max_context, manifest.shapes.chunk, placement)
        if max_context > manifest.shapes.context:
            raise BundleError(f"{manifest.path}: a static bundle holds at most {manifest.shapes.context} positions "
                              f"(shapes.context); max_context {max_context} is more")

    def _call(self, role: str, cache: StaticCache, token_ids: np.ndarray, out: np.ndarray,
              run_options: ort.RunOptions | None) -> np.ndarray:
        """Run graph `role` (its fixed T) on the first len(token_ids) <= T tokens, padded; logits [1, T, vocab]."""
        T, real = self.manifest.graphs[role].tokens, int(token_ids.shape[0])
        ids = np.zeros((1, T), np.int64)
        ids[0, :real] = token_ids
        positions = np.minimum(np.arange(cache.length, cache.length + T, dtype=np.int64),
                               self.manifest.shapes.context - 1).reshape(1, T)
        cache.prepare_static(T, real)

        def bind(binding: ort.IOBinding, part: Part) -> None:
            for name, array in ((names.INPUT_IDS, ids), (names.POSITION_IDS, positions)):
                if part.takes(name):
                    bind_array(binding.bind_input, name, array)
            cache.bind_static(binding, part.layers, part.inputs)

        self._run_parts(role, T, bind, out, run_options)
        cache.commit(token_ids)
        return out

    def run_chunk(self, cache, token_ids, all_rows, run_options):
        real = int(token_ids.shape[0])
        role = "decode" if real == 1 else "prefill"
        out = np.empty((1, self.manifest.graphs[role].tokens, self.vocab), self.logits_dtype)
        return self._call(role, cache, token_ids, out, run_options)[0, :real].astype(np.float32, copy=False)

    def decode(self, cache, token, out, run_options=None):
        self._call("decode", cache, np.array([token], dtype=np.int64), out, run_options)
        return out[0, -1].astype(np.float32, copy=False)
