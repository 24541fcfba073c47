"""A pool of "shared" caches that live side by side, so several sequences decode in one graph call.

    pool = SlotPool(spec, slots=4)      one host buffer per layer, [S, kv, rows, hd] (slot b = rows [b] of axis 0)
    cache = pool.slot(b)                a KVCache of its own (a SlotCache): prefilled alone, rolled back, reused and
                                        checkpointed like a SharedCache, bound as the contiguous block of slot b,
                                        [1, kv, rows, hd] (a C-contiguous array's slot is one block of memory)
    pool.bind_run(binding, first, n, layers)
                                        binds slots first..first+n-1 as one [n, kv, rows, hd] block per layer: the
                                        engine's batched decode (engine.decode_batch), whose GroupQueryAttention takes
                                        each sequence's own length from its own position (seqlens_k per batch row)

Full layers share one row count across the slots: when any slot needs more rows, every slot's buffer grows (by a quarter,
one copy), so the pool holds S x the longest sequence's rows. Sliding layers in the op's window cache have their
fixed capacity. A batched call needs its slots adjacent in the pool (one block of memory per layer): the engine
runs each adjacent run of slots as one call. The pool lives on the host (numpy, bound by pointer).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from gptoss.bundle import names
from gptoss.bundle.kv import KVContract

from .shared import SharedCache, grown
from .storage import HostBuffer, bind_array


class SlotPool:
    """The buffers of `slots` shared caches, one [S, kv, rows, hd] array per layer and key/value."""

    def __init__(self, spec: KVContract, slots: int = 0, capacity: int = 256, max_checkpoints: int = 4):
        """capacity: rows preallocated on full layers (they hold strictly more rows than any slot's sequence)."""
        if spec.mode != "shared":
            raise ValueError(f"a slot pool holds 'shared' caches, not {spec.mode!r} ones")
        if slots < 0 or capacity < 1:
            raise ValueError(f"slots must be >= 0 and capacity >= 1, got {slots} and {capacity}")
        self.spec, self.dtype = spec, np.dtype(spec.dtype)
        self.fixed = [c is not None for c in spec.capacity]
        self.rows = [c if c is not None else capacity + 1 for c in spec.capacity]
        self.arrays = [self._alloc(0, rows) for rows in self.rows]     # per layer: [key, value]
        self.slots: list[SlotCache] = []
        self._max_checkpoints = max_checkpoints
        for _ in range(slots):
            self.add_slot()

    def _alloc(self, slots: int, rows: int) -> list[np.ndarray]:
        shape = (slots, self.spec.num_kv_heads, rows, self.spec.head_dim)
        return [np.zeros(shape, self.dtype), np.zeros(shape, self.dtype)]

    # ---------------------------------------------------------------- slots
    def add_slot(self) -> "SlotCache":
        """One more slot (every layer's buffer is copied into one a slot larger)."""
        for i, old in enumerate(self.arrays):
            fresh = self._alloc(len(self.slots) + 1, self.rows[i])
            for new, buf in zip(fresh, old):
                new[:len(self.slots)] = buf
            self.arrays[i] = fresh
        self.slots.append(SlotCache(self, len(self.slots), self._max_checkpoints))
        return self.slots[-1]

    def __len__(self) -> int:
        return len(self.slots)

    def grow(self, layer: int, rows: int) -> None:
        """Give full layer `layer` at least `rows` rows in every slot (a quarter more at least, one copy)."""
        if self.fixed[layer] or rows <= self.rows[layer]:
            return
        new_rows = grown(self.rows[layer], rows)
        fresh = self._alloc(len(self.slots), new_rows)
        for new, buf in zip(fresh, self.arrays[layer]):
            new[:, :, :self.rows[layer]] = buf
        self.arrays[layer], self.rows[layer] = fresh, new_rows

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for pair in self.arrays for a in pair)

    # ------------------------------------------------------------- binding
    def bind_run(self, binding: ort.IOBinding, first: int, count: int, layers) -> None:
        """Bind slots first..first+count-1 of `layers` as past and present, for a call appending one token to
        each: full layers first grow to hold strictly more rows than the longest of them after it."""
        longest = max(self.slots[b].length for b in range(first, first + count))
        for i in layers:
            self.grow(i, longest + 2)
            for array, past, present in zip(self.arrays[i], names.kv_names(i)[:2], names.kv_names(i)[2:]):
                block = array[first:first + count]          # adjacent slots of a C-contiguous array: one block
                bind_array(binding.bind_input, past, block)
                bind_array(binding.bind_output, present, block)


class _SlotBuffer(HostBuffer):
    """Slot `b` of one pool array: a HostBuffer (kv/storage.py) whose array is the slot's [1, kv, rows, hd] block,
    looked up at each use (the pool reallocates when it grows)."""

    def __init__(self, pool: SlotPool, layer: int, which: int, b: int):
        self.pool, self.layer, self.which, self.b = pool, layer, which, b

    @property
    def array(self) -> np.ndarray:
        return self.pool.arrays[self.layer][self.which][self.b:self.b + 1]


class _SlotLayer:
    """What SharedCache keeps per layer (keep, key, value, rows, fixed), read from the pool."""

    def __init__(self, pool: SlotPool, layer: int, b: int):
        self.pool, self.index = pool, layer
        self.keep = pool.spec.keep[layer]
        self.fixed = pool.fixed[layer]
        self.key, self.value = _SlotBuffer(pool, layer, 0, b), _SlotBuffer(pool, layer, 1, b)

    @property
    def rows(self) -> int:
        return self.pool.rows[self.index]


class SlotCache(SharedCache):
    """Slot `b` of a SlotPool: a shared cache whose buffers are the pool's (prefill, rollback, checkpoints as
    SharedCache); `pool` and `index` tell the engine which slots can run together."""

    def __init__(self, pool: SlotPool, index: int, max_checkpoints: int = 4):
        super(SharedCache, self).__init__(pool.spec, max_checkpoints)     # KVCache's state; the pool owns buffers
        self.pool, self.index = pool, index
        self._layers = [_SlotLayer(pool, i, index) for i in range(pool.spec.num_layers)]

    @property
    def nbytes(self) -> int:
        return self.pool.nbytes // max(1, len(self.pool)) + self._checkpoint_bytes()

    def _grow(self, lay: _SlotLayer, rows: int) -> None:
        self.pool.grow(lay.index, rows)

    def _room(self, needed: int) -> int:
        return grown(needed, needed + 1)          # a pool has no sized-for capacity: it grows as its slots do
