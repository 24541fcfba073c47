"""The "concat" cache (bundle.kv): the graph takes `past [1, kv, P_i, hd]` and returns `present [1, kv, P_i + T,
hd]` (past, then the T new rows). The runtime keeps the last `keep[i]` positions of `present` (all on full
layers) and feeds them back. Each layer owns two flat host buffers, used alternately:

    step n:   past  = view of buffer A (first P_i positions)  ──graph──>  present written into buffer B
    step n+1: past  = view of buffer B                          ──graph──>  present written into buffer A

so no step allocates: ORT writes `present` straight into the other buffer (I/O binding) and a full layer's new
`past` is that buffer as it is. A sliding layer copies its last `keep` positions back (at most window - 1
positions: small). Buffers are preallocated for the requested context and grow (x2) on demand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from gptoss.bundle import names
from gptoss.bundle.kv import KVContract

from .base import Checkpoint, KVCache
from .storage import bind_array

GROWTH = 2


@dataclass
class _Layer:
    keep: int | None                    # None: a full layer keeps every position
    key: list[np.ndarray]               # two flat buffers each
    value: list[np.ndarray]
    capacity: int                       # positions each buffer holds
    cur: int = 0                        # which buffer holds `past`
    held: int = 0                       # P_i: positions held


class ConcatCache(KVCache):
    def __init__(self, spec: KVContract, capacity: int = 256, max_checkpoints: int = 4):
        super().__init__(spec, max_checkpoints)
        self._layers = [self._new_layer(keep, capacity) for keep in spec.keep]

    def _new_layer(self, keep: int | None, capacity: int) -> _Layer:
        """Two buffers used in turn; sliding layers hold keep + 1 positions, full ones `capacity` (growing)."""
        cap = capacity if keep is None else keep + 1
        return _Layer(keep, [self._alloc(cap), self._alloc(cap)], [self._alloc(cap), self._alloc(cap)], cap)

    # ---------------------------------------------------------------- facts
    def held(self, layer: int) -> int:
        return self._layers[layer].held

    @property
    def nbytes(self) -> int:
        """Bytes allocated for this cache (both buffers of every layer, plus checkpoints)."""
        return sum(b.nbytes for layer in self._layers for b in (*layer.key, *layer.value)) + self._checkpoint_bytes()

    # ------------------------------------------------------------ one step
    def past(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """Contiguous views `[1, kv, P_i, hd]` of layer `layer`'s cached keys and values."""
        lay = self._layers[layer]
        return self._view(lay.key[lay.cur], lay.held), self._view(lay.value[lay.cur], lay.held)

    def present(self, layer: int, new: int) -> tuple[np.ndarray, np.ndarray]:
        """Views `[1, kv, P_i + new, hd]` for the graph to write `present` into (the other buffers)."""
        lay = self._layers[layer]
        self._reserve(lay, lay.held + new)
        other = 1 - lay.cur
        n = lay.held + new
        return self._view(lay.key[other], n), self._view(lay.value[other], n)

    def bind(self, binding: ort.IOBinding, new: int, layers) -> None:
        for i in layers:
            pk, pv, ck, cv = names.kv_names(i)
            present_k, present_v = self.present(i, new)      # first: it may grow the buffers
            past_k, past_v = self.past(i)
            bind_array(binding.bind_input, pk, past_k)
            bind_array(binding.bind_input, pv, past_v)
            bind_array(binding.bind_output, ck, present_k)
            bind_array(binding.bind_output, cv, present_v)

    def commit(self, token_ids) -> None:
        new = len(token_ids)
        for lay in self._layers:
            n = lay.held + new
            other = 1 - lay.cur
            if lay.keep is None or n <= lay.keep:
                lay.cur, lay.held = other, n
            else:  # keep the last `keep` positions: copy them back into the now free buffer
                for bufs in (lay.key, lay.value):
                    src = self._view(bufs[other], n)[:, :, n - lay.keep:]
                    self._view(bufs[lay.cur], lay.keep)[...] = src
                lay.held = lay.keep
        self._record(token_ids)

    def fill_random(self, length: int, seed: int = 0) -> None:
        if self.length:
            raise ValueError("fill_random needs an empty cache")
        rng = np.random.default_rng(seed)
        for lay in self._layers:
            held = length if lay.keep is None else min(length, lay.keep)
            self._reserve(lay, held)
            for bufs in (lay.key, lay.value):
                view = self._view(bufs[lay.cur], held)
                view[...] = rng.standard_normal(view.shape, dtype=np.float32)
            lay.held = held
        self._record([-1] * length)

    # -------------------------------------------------------------- rollback
    def _snapshot(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of a sliding layer's held keys and values."""
        k, v = self.past(layer)
        return k.copy(), v.copy()

    def _can_truncate(self, s: int) -> bool:
        """Every sliding layer holds positions [s - min(s, keep), s) now."""
        n = self.length
        return all(lay.keep is None or n - lay.held <= s - min(s, lay.keep) for lay in self._layers)

    def _truncate(self, s: int, cp: Checkpoint | None) -> None:
        n = self.length
        for i, lay in enumerate(self._layers):
            if cp is not None and i in cp.sliding:
                k, v = cp.sliding[i]
                held = k.shape[2]
                self._reserve(lay, held)
                self._view(lay.key[lay.cur], held)[...] = k
                self._view(lay.value[lay.cur], held)[...] = v
                lay.held = held
                continue
            start = n - lay.held                       # absolute position of the first held one
            held = s if lay.keep is None else min(s, lay.keep)
            self._compact(lay, s - held - start, held)
        del self.tokens[s:]
        self.last_logits = None

    def _compact(self, lay: _Layer, lo: int, count: int) -> None:
        """Keep held positions [lo, lo + count), moved into the other buffer (which becomes current)."""
        other = 1 - lay.cur
        for bufs in (lay.key, lay.value):
            src = self._view(bufs[lay.cur], lay.held)[:, :, lo:lo + count]
            self._view(bufs[other], count)[...] = src
        lay.cur, lay.held = other, count

    def _reserve(self, lay: _Layer, positions: int) -> None:
        if positions <= lay.capacity:
            return
        cap = positions if lay.keep is not None else max(positions, GROWTH * lay.capacity)
        for bufs in (lay.key, lay.value):
            old = self._view(bufs[lay.cur], lay.held)
            fresh = [self._alloc(cap), self._alloc(cap)]
            self._view(fresh[lay.cur], lay.held)[...] = old
            bufs[:] = fresh
        lay.capacity = cap

    def _alloc(self, positions: int) -> np.ndarray:
        return np.empty(self._kv * positions * self._hd, dtype=self.dtype)

    def _view(self, buf: np.ndarray, positions: int) -> np.ndarray:
        return buf[: self._kv * positions * self._hd].reshape(1, self._kv, positions, self._hd)
