"""Run a bundle's graphs over a KV cache: prefill (chunked) and one-token decode, through I/O binding.

One Engine per loaded model, shared by every conversation: it holds the sessions (whose `run` is thread-safe) and
no per-conversation state. A call binds the token ids and positions, asks the cache to bind its buffers (the cache
knows its mode: kv/), binds a caller-owned logits buffer, runs, and lets the cache adopt what the graph wrote.

    DynamicEngine   one graph, any number of tokens per call ("concat" or "shared" caches)
    StaticEngine    static_engine.py: a fixed-chunk prefill graph and a one-token decode graph ("static" cache)

`engine_for(manifest, sessions, ...)` picks the one the manifest's shapes call for.

Batched decode: `decode_batch(caches, tokens)` appends one token to each of B sequences. The DynamicEngine over a
shared host cache runs B slots of one `SlotPool` (kv/pool.py) as ONE graph call, input_ids and position_ids
[B, 1], each sequence at its own position: the graph derives GroupQueryAttention's per-sequence seqlens_k from
position_ids, and the experts are token-wise, so each row's logits are those of its sequence decoded alone.
Slots must be adjacent in the pool to share a call (one block of memory per layer); other caches go one by one.
"""

from __future__ import annotations

import threading

import numpy as np
import onnxruntime as ort

from gptoss.bundle import Manifest, names

from .capture import Capture, without_capture
from .errors import ArgumentError, check_context
from .kv import HOST, KVCache, Placement, SlotCache, SlotPool, new_cache
from .kv.storage import bind_array
from .parts import Part, check_dtypes, parts_of


class Cancelled(Exception):
    """Raised inside the engine when a run was cancelled; callers turn it into a clean stop."""


class Engine:
    """What both engines share: the parts of each graph role, caches, the context limit, prefill in chunks."""

    def __init__(self, sessions: dict[str, list[ort.InferenceSession]], manifest: Manifest, max_context: int,
                 prefill_chunk: int, placement: Placement = HOST, capture: bool = False):
        self.manifest, self.kv = manifest, manifest.kv
        self.max_context, self.vocab, self.prefill_chunk = max_context, manifest.vocab_size, prefill_chunk
        self.hidden = int(manifest.model["hidden_size"])
        if placement.on_device and self.kv.mode != "shared":
            raise ValueError(f"{manifest.path}: a {self.kv.mode!r} KV cache lives on the host; only a shared cache "
                             f"can live on a device")
        self.placement = placement
        self.parts = {role: parts_of(manifest, role, role_sessions) for role, role_sessions in sessions.items()}
        self.logits_dtype = check_dtypes(manifest, next(iter(self.parts.values())))
        self.capture = self._capture() if capture else None

    def _capture(self):
        """The captured decode (capture.py), after checking that this bundle and placement allow one."""
        main = self.parts.get("main", [])
        if self.manifest.target.graph_capture is None or len(main) != 1 or not self.placement.on_device:
            raise ArgumentError(f"{self.manifest.path}: graph capture needs a capturable one-part graph (manifest "
                                f"target.graph_capture; this one: {self.manifest.target.graph_capture!r}, "
                                f"{len(main)} part(s)) with its KV cache on the device (here: "
                                f"{self.placement.device or 'host'})")
        return Capture(main[0], self.placement, self.vocab, self.logits_dtype)

    # ------------------------------------------------------------------ facts
    @property
    def scores_all_positions(self) -> bool:
        """Whether the graph can return logits for every position of a call."""
        return self.manifest.logits in ("all", "selectable")

    def new_cache(self, capacity: int) -> KVCache:
        return new_cache(self.kv, capacity=capacity, placement=self.placement)

    def logits_buffer(self) -> np.ndarray:
        """A buffer for one decode step's logits [1, 1, vocab] (one per sequence: engines are shared)."""
        return np.empty((1, 1, self.vocab), dtype=self.logits_dtype)

    # ------------------------------------------------------------------ calls
    def run_chunk(self, cache: KVCache, token_ids: np.ndarray, all_rows: bool,
                  run_options: ort.RunOptions | None) -> np.ndarray:
        """Append `token_ids` (at most the prefill chunk) to `cache`; logits [rows, vocab] (float32)."""
        raise NotImplementedError

    def decode(self, cache: KVCache, token: int, out: np.ndarray,
               run_options: ort.RunOptions | None = None) -> np.ndarray:
        """Append one token; write its logits into `out` (logits_buffer()) and return them as float32 [vocab]."""
        raise NotImplementedError

    @property
    def batches(self) -> bool:
        """Whether `decode_batch` advances several sequences in one graph call (their caches: one SlotPool's)."""
        return False

    def new_pool(self, slots: int = 0, capacity: int = 256) -> SlotPool:
        """Caches that can decode together (`decode_batch`): a SlotPool of `slots` slots (add more with
        pool.add_slot()); `capacity` rows preallocated on the full layers of each."""
        if not self.batches:
            raise ValueError(f"{self.manifest.path}: batched decode needs a dynamic-shape bundle with a shared KV "
                             f"cache on the host (this one: {self.kv.mode!r} cache, shapes "
                             f"{type(self.manifest.shapes).__name__}, placement {self.placement.device or 'host'})")
        return SlotPool(self.kv, slots, capacity)

    def decode_batch(self, caches: list[KVCache], tokens, run_options: ort.RunOptions | None = None) -> np.ndarray:
        """Append tokens[i] to caches[i] for each i; their logits float32 [B, vocab] (row i: caches[i]'s). Where the
        engine `batches`, each run of adjacent slots of one SlotPool is one graph call; any other cache, one call."""
        _check_batch(caches, tokens)
        out = np.empty((len(caches), self.vocab), np.float32)
        buffer = self.logits_buffer()
        for run in _adjacent_runs(caches) if self.batches else [[i] for i in range(len(caches))]:
            if len(run) == 1:
                out[run[0]] = self.decode(caches[run[0]], int(tokens[run[0]]), buffer, run_options)
            else:
                out[run] = self._call_slots([caches[i] for i in run], [int(tokens[i]) for i in run], run_options)
        return out

    def _call_slots(self, slots: list[SlotCache], tokens: list[int], run_options) -> np.ndarray:
        """Append one token to each of adjacent slots (in pool order) in one call; logits float32 [B, vocab]."""
        raise NotImplementedError

    def prefill(self, cache: KVCache, token_ids, chunk: int | None = None, all_logits: bool = False,
                cancel: "threading.Event | None" = None, run_options: ort.RunOptions | None = None) -> np.ndarray:
        """Feed `token_ids` in chunks. Returns the last row of logits (float32 [vocab]), or every row ([T, vocab])
        when `all_logits` (which needs a bundle whose graph scores every position)."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise ValueError("nothing to prefill: the token list is empty")
        check_context(cache.length + int(ids.size), self.max_context,
                      "scoring" if all_logits else f"a prompt of {ids.size} tokens (after {cache.length} cached)")
        chunk = chunk or self.prefill_chunk
        cache.reserve(cache.length + int(ids.size))
        rows = []
        for start in range(0, ids.size, chunk):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            out = self.run_chunk(cache, ids[start:start + chunk], all_logits, run_options)
            rows.append(out if all_logits else out[-1:])
        if all_logits:
            return np.concatenate(rows, axis=0)
        cache.last_logits = rows[-1][0]
        return cache.last_logits

    def _run_parts(self, role: str, T: int, bind, out: np.ndarray, run_options: ort.RunOptions | None,
                   batch: int = 1) -> None:
        """Run graph `role`'s parts in order; `bind(binding, part)` binds a part's own inputs and cache, the hidden
        state flows from part to part, the last part writes the logits into `out`."""
        hidden = None
        if self.capture is not None:
            run_options = without_capture(run_options)
        for part in self.parts[role]:
            binding = part.session.io_binding()
            bind(binding, part)
            if not part.first:
                bind_array(binding.bind_input, names.HIDDEN_IN, hidden)
            if part.last:
                bind_array(binding.bind_output, names.LOGITS, out)
            else:
                hidden_out = np.empty((batch, T, self.hidden), np.float32)
                bind_array(binding.bind_output, names.HIDDEN_OUT, hidden_out)
            try:
                part.session.run_with_iobinding(binding, run_options)
            except Exception:  # ORT raises its own exception types
                if run_options is not None and run_options.terminate:
                    raise Cancelled() from None
                raise
            if not part.last:
                hidden = hidden_out


class DynamicEngine(Engine):
    """One graph ("main") over a concat or shared cache; a call appends any number of tokens."""

    def _rows(self, tokens: int, all_rows: bool) -> int:
        """Rows of logits a call of `tokens` tokens returns."""
        mode = self.manifest.logits
        return tokens if mode == "all" or (mode == "selectable" and all_rows) else 1

    def _call(self, cache: KVCache, token_ids: np.ndarray, out: np.ndarray, run_options) -> np.ndarray:
        T = int(token_ids.shape[0])
        ids = np.ascontiguousarray(token_ids, dtype=np.int64).reshape(1, T)
        positions = np.arange(cache.length, cache.length + T, dtype=np.int64).reshape(1, T)
        logits_from = np.array([T - out.shape[1]], dtype=np.int64)   # bound by pointer: must outlive the run
        lengths = _lengths(positions)

        def bind(binding: ort.IOBinding, part: Part) -> None:
            _bind_tokens(binding, part, ids, positions, logits_from, lengths)
            cache.bind(binding, T, part.layers)

        self._run_parts("main", T, bind, out, run_options)
        cache.commit(token_ids)
        return out

    def run_chunk(self, cache, token_ids, all_rows, run_options):
        out = np.empty((1, self._rows(int(token_ids.shape[0]), all_rows), self.vocab), self.logits_dtype)
        return self._call(cache, token_ids, out, run_options)[0].astype(np.float32, copy=False)

    def decode(self, cache, token, out, run_options=None):
        if self.capture is not None:            # only made with the caches on the device (_capture)
            return self.capture.decode(cache, token)
        self._call(cache, np.array([token], dtype=np.int64), out, run_options)
        return out[0, -1].astype(np.float32, copy=False)

    # ------------------------------------------------------------ batched decode
    @property
    def batches(self) -> bool:
        return self.kv.mode == "shared" and not self.placement.on_device

    def _call_slots(self, slots, tokens, run_options):
        B, pool, first = len(slots), slots[0].pool, slots[0].index
        ids = np.array(tokens, dtype=np.int64).reshape(B, 1)
        positions = np.array([s.length for s in slots], dtype=np.int64).reshape(B, 1)
        logits_from = np.zeros(1, dtype=np.int64)
        out = np.empty((B, 1, self.vocab), self.logits_dtype)
        lengths = _lengths(positions)

        def bind(binding: ort.IOBinding, part: Part) -> None:
            _bind_tokens(binding, part, ids, positions, logits_from, lengths)
            pool.bind_run(binding, first, B, part.layers)

        self._run_parts("main", 1, bind, out, run_options, batch=B)
        for slot, token in zip(slots, tokens):
            slot.commit([token])
        return out[:, 0].astype(np.float32, copy=False)


def _lengths(positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A capturable graph's attention lengths for a call at `positions` [B, T]: seqlens_k [B] (each sequence's last
    position) and total_sequence_length [] (the longest sequence's length), int32."""
    return positions[:, -1].astype(np.int32), np.array(int(positions.max()) + 1, dtype=np.int32)


def _bind_tokens(binding: ort.IOBinding, part: Part, ids, positions, logits_from, lengths) -> None:
    """A dynamic graph call's token inputs, those the part takes (arrays bound by pointer: they outlive the run)."""
    inputs = ((names.INPUT_IDS, ids), (names.POSITION_IDS, positions), (names.LOGITS_FROM, logits_from),
              (names.SEQLENS_K, lengths[0]), (names.TOTAL_SEQUENCE_LENGTH, lengths[1]))
    for name, array in inputs:
        if part.takes(name):
            bind_array(binding.bind_input, name, array)


def _check_batch(caches, tokens) -> None:
    if len(caches) != len(tokens):
        raise ValueError(f"decode_batch: {len(caches)} caches but {len(tokens)} tokens")
    if len({id(c) for c in caches}) != len(caches):
        raise ValueError("decode_batch: a cache appears twice (one token per sequence per step)")


def _adjacent_runs(caches) -> list[list[int]]:
    """Indices into `caches`, grouped into runs of adjacent slots of one pool (in slot order); other caches alone."""
    slots = sorted((i for i, c in enumerate(caches) if isinstance(c, SlotCache)),
                   key=lambda i: (id(caches[i].pool), caches[i].index))
    runs: list[list[int]] = [[i] for i, c in enumerate(caches) if not isinstance(c, SlotCache)]
    last = None
    for i in slots:
        if last is not None and last.pool is caches[i].pool and last.index + 1 == caches[i].index:
            runs[-1].append(i)
        else:
            runs.append([i])
        last = caches[i]
    return runs


def engine_for(manifest: Manifest, sessions: dict[str, list[ort.InferenceSession]], max_context: int,
               prefill_chunk: int, placement: Placement = HOST, capture: bool = False) -> Engine:
    """The engine the manifest's shapes call for; capture: decode by replaying a captured graph (capture.py)."""
    if manifest.kv.mode == "static":
        if capture:
            raise ArgumentError(f"{manifest.path}: graph capture is for dynamic-shape bundles; a static one "
                                f"compiles its graphs ahead of time")
        from .static_engine import StaticEngine

        return StaticEngine(sessions, manifest, max_context, prefill_chunk, placement)
    return DynamicEngine(sessions, manifest, max_context, prefill_chunk, placement, capture)
