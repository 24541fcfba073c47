"""The "shared" cache (bundle.kv): one buffer per layer, bound as both `past` and `present`.

    layer without a capacity (every full layer; a sliding layer whose window is a mask only):
                    [1, kv, rows, hd]; the graph writes the new rows at their absolute positions and reads rows
                    [0, N + T); rows grow (by a quarter, one copy) when N + T would reach them.
    layer with a capacity C (a sliding layer in the op's window cache): [1, kv, C, hd], fixed: the attention op
                    keeps the last positions itself (ORT GroupQueryAttention sliding_window_cache), compacting.

Nothing is copied per step. The buffers live where the `Placement` says (kv/storage.py): host numpy, or OrtValues
on the execution provider's device, which the graph reads and writes in place. Rolling back: full layers just
forget rows past the target; a sliding layer can go back to any length only while it never compacted
(N <= C), else to a checkpoint (a copy of its C rows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from gptoss.bundle import names
from gptoss.bundle.kv import KVContract

from .base import Checkpoint, KVCache
from .storage import HOST, Placement

FIRST_ROWS = 257    # a host cache's full layers start here (or at their capacity, when smaller)


def grown(rows: int, needed: int) -> int:
    """Rows after growing a `rows`-row buffer that must hold `needed` rows: a quarter more at least. Not x2: the cpu
    graph's full-layer products read every row of the buffer, used or not (targets/passes/full_attention.py)."""
    return max(needed, -(-rows * 5 // 4))


@dataclass
class _Layer:
    keep: int | None                    # None: a full layer
    key: object                         # HostBuffer | DeviceBuffer [1, kv, rows, hd]
    value: object
    rows: int
    fixed: bool                         # a window cache of `rows` rows the op manages; else rows grow


class SharedCache(KVCache):
    def __init__(self, spec: KVContract, capacity: int = 256, max_checkpoints: int = 4,
                 placement: Placement = HOST):
        """capacity: the positions full layers are sized for (they hold strictly more rows than the sequence). A
        device buffer takes them all up front (it never moves); a host buffer starts at FIRST_ROWS at most and grows
        towards them as the sequence does, ending exactly at capacity + 1 rows: the cpu graph's full layers decode over
        every row, so a short sequence in a 32k-row buffer would decode at the 32k-context speed."""
        super().__init__(spec, max_checkpoints)
        self.placement = placement
        self._target = capacity + 1
        first = self._target if placement.on_device else min(self._target, FIRST_ROWS)
        self._layers = [self._new_layer(keep, fixed, first) for keep, fixed in zip(spec.keep, spec.capacity)]

    def _new_layer(self, keep: int | None, fixed: int | None, rows: int) -> _Layer:
        rows = fixed if fixed is not None else rows
        return _Layer(keep, self._buffer(rows), self._buffer(rows), rows, fixed is not None)

    def _buffer(self, rows: int):
        return self.placement.buffer((1, self._kv, rows, self._hd), self.dtype)

    # ---------------------------------------------------------------- facts
    def held(self, layer: int) -> int:
        lay, n = self._layers[layer], self.length
        return n if lay.keep is None else min(n, lay.keep)

    @property
    def nbytes(self) -> int:
        return sum(lay.key.nbytes + lay.value.nbytes for lay in self._layers) + self._checkpoint_bytes()

    def buffers(self, layer: int):
        """Layer `layer`'s (key, value) buffers, `[1, kv, rows, hd]` (HostBuffer or DeviceBuffer)."""
        lay = self._layers[layer]
        return lay.key, lay.value

    # ------------------------------------------------------------ one step
    def bind(self, binding: ort.IOBinding, new: int, layers) -> None:
        for i in layers:
            lay = self._layers[i]
            if not lay.fixed:
                # strictly more rows than N + new: a buffer as long as the sequence would read as a plain past
                self._grow(lay, self.length + new + 1)
            pk, pv, ck, cv = names.kv_names(i)
            lay.key.bind_input(binding, pk)
            lay.value.bind_input(binding, pv)
            lay.key.bind_output(binding, ck)
            lay.value.bind_output(binding, cv)

    def commit(self, token_ids) -> None:
        self._record(token_ids)

    def reserve(self, length: int) -> None:
        """Full layers grow once to hold strictly more rows than `length`, and the quarter more that decode would
        grow to next (up to the capacity): a prompt's chunks then all run over buffers of one size, so the prompt
        branch's attention scores (chunk x rows per head) keep one size and ONNX Runtime's arena reuses one block
        for them instead of keeping a larger one for every chunk (growing chunk by chunk made the 2-layer slice's
        32k prefill peak 3 GiB higher; docs/performance.md); and the first decode step after a long prompt does
        not copy the whole cache."""
        for lay in self._layers:
            if not lay.fixed:
                self._grow(lay, self._room(length + 1))

    def _room(self, needed: int) -> int:
        """Rows for `needed` and a quarter more, but no more than the sized-for capacity + 1 (when that holds
        `needed`)."""
        return max(needed, min(grown(needed, needed + 1), self._target))

    def fill_random(self, length: int, seed: int = 0) -> None:
        if self.length:
            raise ValueError("fill_random needs an empty cache")
        rng = np.random.default_rng(seed)
        for lay in self._layers:
            if not lay.fixed:
                self._grow(lay, length + 1)
            rows = min(length, lay.rows)
            for buf in (lay.key, lay.value):
                buf.write_rows(rng.standard_normal((1, self._kv, rows, self._hd), dtype=np.float32).astype(self.dtype, copy=False))
        self._record([-1] * length)

    # -------------------------------------------------------------- rollback
    def _sliding_layers(self) -> list[int]:
        """Only window caches need checkpoints: a growing buffer keeps every position and just truncates."""
        return [i for i, lay in enumerate(self._layers) if lay.fixed]

    def _snapshot(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """A sliding layer's whole buffer: its row order depends on the length, so all of it is the state."""
        lay = self._layers[layer]
        return lay.key.read(), lay.value.read()

    def _can_truncate(self, s: int) -> bool:
        """Window caches that never compacted (N <= rows) still hold positions 0..N-1 in rows 0..N-1."""
        return all(not lay.fixed or self.length <= lay.rows for lay in self._layers)

    def _truncate(self, s: int, cp: Checkpoint | None) -> None:
        if cp is not None:
            for i, (k, v) in cp.sliding.items():
                self._layers[i].key.write(k)
                self._layers[i].value.write(v)
        del self.tokens[s:]
        self.last_logits = None

    def _grow(self, lay: _Layer, rows: int) -> None:
        if rows <= lay.rows:
            return
        new_rows = grown(lay.rows, rows)
        if rows <= self._target:
            new_rows = min(new_rows, self._target)          # the sized-for length: exactly, no more
        n = min(self.length, lay.rows)
        for attr in ("key", "value"):
            fresh = self._buffer(new_rows)
            fresh.write_rows(getattr(lay, attr).read()[:, :, :n])
            setattr(lay, attr, fresh)
        lay.rows = new_rows
