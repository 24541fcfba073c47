"""Run the bundle's graph over a KVCache: chunked prefill and single-token decode, through I/O binding.

One Engine per loaded model, shared by every conversation: it holds the session (whose `run` is thread-safe)
and the I/O names from the manifest, and no per-conversation state. Each call binds the cache's buffers
(`KVCache.past` as inputs, `KVCache.present` as outputs) and a caller-owned logits buffer, so a decode step
allocates nothing on the Python side.
"""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort

from .cache import KVCache
from .errors import BundleError, ContextOverflowError
from .manifest import Manifest

_ORT_FLOAT = {"tensor(float)": np.dtype(np.float32), "tensor(float16)": np.dtype(np.float16)}


class Cancelled(Exception):
    """Raised inside the engine when a run was cancelled; callers turn it into a clean stop."""


class Engine:
    def __init__(self, session: ort.InferenceSession, manifest: Manifest, max_context: int):
        self.session = session
        self.manifest = manifest
        self.kv = manifest.graph.kv
        self.max_context = max_context
        self.vocab = manifest.vocab_size
        g = manifest.graph
        self._layer_names = [self.kv.names(i) for i in range(self.kv.num_layers)]
        self.logits_mode = g.logits_mode
        self._check_io(g)

    def _check_io(self, g) -> None:
        """The session's inputs/outputs are the ones the manifest names, with the dtypes it says."""
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        want_in = [g.input_ids, g.position_ids] + [n for names in self._layer_names for n in names[:2]]
        if g.logits_from:
            want_in.append(g.logits_from)
        want_out = [g.logits] + [n for names in self._layer_names for n in names[2:]]
        where = f"{self.manifest.bundle_dir / g.file} (per {self.manifest.path})"
        for kind, want, have in (("input", want_in, inputs), ("output", want_out, outputs)):
            missing = [n for n in want if n not in have]
            if missing:
                raise BundleError(f"{where}: graph has no {kind} {missing[0]!r}; it has {sorted(have)[:8]}...")
        extra = sorted(set(inputs) - set(want_in))
        if extra:
            raise BundleError(f"{where}: graph input {extra[0]!r} is not described by the manifest")
        ltype = outputs[g.logits].type
        if ltype not in _ORT_FLOAT:
            raise BundleError(f"{where}: logits output has type {ltype}; expected float or float16")
        self.logits_dtype = _ORT_FLOAT[ltype]
        kv_type = {np.dtype(np.float32): "tensor(float)", np.dtype(np.float16): "tensor(float16)"}[self.kv.dtype]
        past_key = self._layer_names[0][0]
        if inputs[past_key].type != kv_type:
            raise BundleError(f"{where}: {past_key} is {inputs[past_key].type} but kv_cache.dtype is "
                              f"{self.kv.dtype.name}")

    # ------------------------------------------------------------------ run
    @property
    def scores_all_positions(self) -> bool:
        """Whether the graph can return logits for every position of a call."""
        return self.logits_mode in ("all", "selectable")

    def _rows(self, tokens: int, all_rows: bool) -> int:
        """Rows of logits a call appending `tokens` tokens returns."""
        if self.logits_mode == "all" or (self.logits_mode == "selectable" and all_rows):
            return tokens
        return 1

    def logits_buffer(self, tokens: int, all_rows: bool = False) -> np.ndarray:
        """A buffer for the logits of a call appending `tokens` tokens."""
        return np.empty((1, self._rows(tokens, all_rows), self.vocab), dtype=self.logits_dtype)

    def check_room(self, cache: KVCache, new: int, generated: list[int] | None = None) -> None:
        needed = cache.length + new
        if needed > self.max_context:
            raise ContextOverflowError(
                f"context overflow: {needed} tokens needed, the context holds {self.max_context} "
                f"(max_context; raise it up to the model's {self.manifest.max_position_embeddings})",
                needed=needed, limit=self.max_context, tokens=generated)

    def run(self, cache: KVCache, token_ids: np.ndarray, logits: np.ndarray,
            run_options: ort.RunOptions | None = None, all_rows: bool = False) -> np.ndarray:
        """Append `token_ids` (int64 [T]) to `cache`; write into and return `logits` [1, T or 1, vocab].

        With a "selectable" graph only the last position's logits are computed unless `all_rows`."""
        T = int(token_ids.shape[0])
        self.check_room(cache, T)
        g = self.manifest.graph
        ids = np.ascontiguousarray(token_ids, dtype=np.int64).reshape(1, T)
        positions = np.arange(cache.length, cache.length + T, dtype=np.int64).reshape(1, T)
        rows = self._rows(T, all_rows)
        out = logits[:, :rows]
        binding = self.session.io_binding()
        _bind(binding.bind_input, g.input_ids, ids)
        _bind(binding.bind_input, g.position_ids, positions)
        logits_from = np.array([T - rows], dtype=np.int64)     # bound by pointer: must outlive the run
        if g.logits_from:
            _bind(binding.bind_input, g.logits_from, logits_from)
        for i, (pk, pv, ck, cv) in enumerate(self._layer_names):
            present_k, present_v = cache.present(i, T)      # first: it may grow the buffers
            past_k, past_v = cache.past(i)
            _bind(binding.bind_input, pk, past_k)
            _bind(binding.bind_input, pv, past_v)
            _bind(binding.bind_output, ck, present_k)
            _bind(binding.bind_output, cv, present_v)
        _bind(binding.bind_output, g.logits, out)
        try:
            self.session.run_with_iobinding(binding, run_options)
        except Exception:  # ORT raises its own exception types
            if run_options is not None and run_options.terminate:
                raise Cancelled() from None
            raise
        cache.commit(token_ids)
        return out

    def prefill(self, cache: KVCache, token_ids, chunk: int, all_logits: bool = False,
                cancel: "threading.Event | None" = None, run_options: ort.RunOptions | None = None):
        """Feed `token_ids` in chunks of at most `chunk`. Returns the last row of logits (float32 [vocab]),
        or every row ([T, vocab]) when `all_logits` (which needs a bundle with "all" or "selectable" logits)."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("nothing to prefill: the token list is empty")
        self.check_room(cache, int(ids.size))
        rows = [] if all_logits else None
        buf = self.logits_buffer(min(chunk, ids.size), all_rows=all_logits)
        last = None
        for start in range(0, ids.size, chunk):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            out = self.run(cache, ids[start:start + chunk], buf, run_options, all_rows=all_logits)
            if all_logits:
                rows.append(out[0].astype(np.float32))
            last = out[0, -1]
        if all_logits:
            return np.concatenate(rows, axis=0)
        cache.last_logits = last.astype(np.float32)
        return cache.last_logits


def _bind(bind, name: str, array: np.ndarray) -> None:
    bind(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
