"""The KV cache of one conversation, owned by the runtime and shaped by the manifest.

Per layer `i` the graph takes `past [1, kv, P_i, hd]` and returns `present [1, kv, P_i + T, hd]` (past, then
the T new tokens). The runtime keeps the last `keep[i]` positions of `present` (all on full layers) and feeds
them back. Here each layer owns two flat host buffers, used alternately:

    step n:   past  = view of buffer A (first P_i positions)  ──graph──>  present written into buffer B
    step n+1: past  = view of buffer B                          ──graph──>  present written into buffer A

so no step allocates: ORT writes `present` straight into the other buffer (I/O binding) and a full layer's
new `past` is that buffer as it is. A sliding layer copies its last `keep` positions back (at most
window - 1 positions: small). Buffers are preallocated for the requested context and grow (x2) on demand.

Prefix reuse (`reuse`): the cache remembers the token ids it holds. For a new prompt it keeps the longest
common prefix L and the caller feeds only the rest. Full layers roll back by truncation. A sliding layer
that has dropped old positions cannot go back to an arbitrary L: going back to `s` needs positions
`[s - keep, s)`, which it holds only when it never dropped anything or `s` is where it already is. So the
cache also keeps a few *checkpoints*: copies of the sliding layers (small) at chosen lengths, typically the
end of each prompt, which is exactly where a chat's next turn diverges (the assistant's reply is re-rendered
without its analysis). Rolling back goes to the largest safe point <= L: L itself when every sliding layer
still holds what L needs, else the latest checkpoint <= L (0, the empty cache, always qualifies).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .manifest import KVSpec

GROWTH = 2


@dataclass
class _Layer:
    keep: int | None                    # None: a full layer keeps every position
    key: list[np.ndarray]               # two flat buffers each
    value: list[np.ndarray]
    capacity: int                       # positions each buffer holds
    cur: int = 0                        # which buffer holds `past`
    held: int = 0                       # P_i: positions held


@dataclass
class _Checkpoint:
    length: int
    sliding: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)   # layer -> (k, v) copies
    logits: np.ndarray | None = None    # the logits after the token at length - 1, when known


class KVCache:
    """Per-conversation KV cache; see the module docstring. Not thread-safe: one conversation, one thread."""

    def __init__(self, spec: KVSpec, capacity: int = 256, max_checkpoints: int = 4):
        self.spec = spec
        self._kv, self._hd = spec.num_kv_heads, spec.head_dim
        self.tokens: list[int] = []     # the token ids whose keys/values are cached, in order
        self.last_logits: np.ndarray | None = None   # logits after the last cached token, when known
        self.last_reuse = 0             # prompt tokens the last `reuse` kept
        self.max_checkpoints = max_checkpoints
        self._checkpoints: list[_Checkpoint] = []
        self._layers = [self._new_layer(i, capacity) for i in range(spec.num_layers)]

    def _new_layer(self, i: int, capacity: int) -> _Layer:
        """Two buffers used in turn; sliding layers hold keep + 1 positions, full ones `capacity` (growing)."""
        keep = self.spec.keep[i]
        cap = capacity if keep is None else keep + 1
        return _Layer(keep, [self._alloc(cap), self._alloc(cap)], [self._alloc(cap), self._alloc(cap)], cap)

    # ---------------------------------------------------------------- facts
    @property
    def length(self) -> int:
        """N: tokens the cache represents (sliding layers hold fewer positions)."""
        return len(self.tokens)

    def held(self, layer: int) -> int:
        return self._layers[layer].held

    @property
    def nbytes(self) -> int:
        """Bytes allocated for this cache (both buffers of every layer, plus checkpoints)."""
        total = sum(b.nbytes for layer in self._layers for b in (*layer.key, *layer.value))
        return total + sum(k.nbytes + v.nbytes for c in self._checkpoints for k, v in c.sliding.values())

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

    def commit(self, token_ids) -> None:
        """Adopt the `present` tensors the graph wrote for `token_ids` (call once after each run)."""
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
        self.tokens.extend(int(t) for t in token_ids)
        self.last_logits = None

    def fill_random(self, length: int, seed: int = 0) -> None:
        """For benchmarks: make an empty cache hold `length` positions of random keys and values.

        A decode step costs the same whatever the cached values are, so this measures decode speed at a
        long context without prefilling it. The cached token ids are recorded as -1, so no prompt ever reuses them."""
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
        self.tokens.extend([-1] * length)
        self.last_logits = None

    # ---------------------------------------------------------- prefix reuse
    def checkpoint(self) -> None:
        """Remember the sliding layers as they are now, so `reuse` can come back to this length."""
        n = self.length
        if any(c.length == n for c in self._checkpoints) or not self._needs_checkpoints():
            return
        cp = _Checkpoint(n, logits=None if self.last_logits is None else self.last_logits.copy())
        for i, lay in enumerate(self._layers):
            if lay.keep is not None:
                cp.sliding[i] = self._snapshot(i)
        self._checkpoints.append(cp)
        del self._checkpoints[:-self.max_checkpoints]

    def reuse(self, token_ids) -> int:
        """Roll back to the longest reusable prefix of `token_ids`; return its length s.

        Afterwards the cache holds `token_ids[:s]`; the caller feeds `token_ids[s:]`. When the whole of
        `token_ids` is cached and its last logits are known, s == len(token_ids).
        """
        ids = [int(t) for t in token_ids]
        common = 0
        for a, b in zip(self.tokens, ids):
            if a != b:
                break
            common += 1
        if common == len(ids):          # all cached: usable as is if the logits after it are known
            if self.rollback(common) == common and self.last_logits is not None:
                self.last_reuse = common
                return common
            common -= 1                 # else re-run the last token for its logits
        self.last_reuse = self.rollback(common)
        return self.last_reuse

    def rollback(self, target: int) -> int:
        """Go back to the largest safe length <= target (see the module docstring); return it."""
        target = max(0, min(target, self.length))
        if target == self.length:
            return target
        if self._can_truncate(target):
            self._truncate(target, None)
            exact = next((c for c in self._checkpoints if c.length == target and c.logits is not None), None)
            if exact is not None:
                self.last_logits = exact.logits.copy()   # the logits after `target` are known: no re-run
        else:
            cp = max((c for c in self._checkpoints if c.length <= target), key=lambda c: c.length, default=None)
            self._truncate(cp.length if cp else 0, cp)
        self._checkpoints = [c for c in self._checkpoints if c.length <= self.length]
        return self.length

    def clear(self) -> None:
        self._truncate(0, None)
        self._checkpoints.clear()

    # -------------------------------------------------------------- helpers
    def _snapshot(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of a sliding layer's held keys and values (what a checkpoint keeps)."""
        k, v = self.past(layer)
        return k.copy(), v.copy()

    def _needs_checkpoints(self) -> bool:
        return any(lay.keep is not None for lay in self._layers)

    def _can_truncate(self, s: int) -> bool:
        """Every sliding layer holds positions [s - min(s, keep), s) now."""
        n = self.length
        for lay in self._layers:
            if lay.keep is not None and n - lay.held > s - min(s, lay.keep):
                return False
        return True

    def _truncate(self, s: int, cp: _Checkpoint | None) -> None:
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
        self.last_logits = None if cp is None or cp.logits is None else cp.logits.copy()

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
        return np.empty(self._kv * positions * self._hd, dtype=self.spec.dtype)

    def _view(self, buf: np.ndarray, positions: int) -> np.ndarray:
        return buf[: self._kv * positions * self._hd].reshape(1, self._kv, positions, self._hd)


class SharedKVCache(KVCache):
    """KV cache of a "shared"-mode graph: one buffer per layer, bound as both `past` and `present`.

        full layer:     [1, kv, capacity, hd]; the graph writes the new rows at their absolute positions and
                        reads rows [0, N + T); capacity grows (x2, one copy) when N + T would reach it.
        sliding layer:  [1, kv, C, hd] with C fixed by the manifest (>= window): the attention op keeps the last
                        positions itself (ORT GroupQueryAttention sliding_window_cache), compacting in place.

    Nothing is copied per step. Rolling back: full layers just forget rows past the target; a sliding layer can
    go back to any length only while it never compacted (N <= C), else to a checkpoint (a copy of its C rows).
    """

    def _new_layer(self, i: int, capacity: int) -> _Layer:
        """One zeroed buffer per layer: the manifest's fixed capacity (sliding) or `capacity` + 1 rows (full)."""
        keep, fixed = self.spec.keep[i], self.spec.capacity[i]
        rows = fixed if fixed is not None else capacity + 1
        zeros = lambda: np.zeros(self._kv * rows * self._hd, self.spec.dtype)  # noqa: E731
        return _Layer(keep, [zeros()], [zeros()], rows)

    def held(self, layer: int) -> int:
        lay, n = self._layers[layer], self.length
        return n if lay.keep is None else min(n, lay.keep)

    @property
    def nbytes(self) -> int:
        total = sum(lay.key[0].nbytes + lay.value[0].nbytes for lay in self._layers)
        return total + sum(k.nbytes + v.nbytes for c in self._checkpoints for k, v in c.sliding.values())

    def past(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """The layer's whole buffer `[1, kv, capacity, hd]` (the graph reads what the positions say)."""
        lay = self._layers[layer]
        return self._view(lay.key[0], lay.capacity), self._view(lay.value[0], lay.capacity)

    def present(self, layer: int, new: int) -> tuple[np.ndarray, np.ndarray]:
        """The same buffer as `past`: the graph writes into it in place."""
        lay = self._layers[layer]
        if lay.keep is None:
            # strictly more rows than N + new: a buffer as long as the sequence would read as a plain past
            self._grow(lay, self.length + new + 1)
        return self.past(layer)

    def commit(self, token_ids) -> None:
        self.tokens.extend(int(t) for t in token_ids)
        self.last_logits = None

    def fill_random(self, length: int, seed: int = 0) -> None:
        if self.length:
            raise ValueError("fill_random needs an empty cache")
        rng = np.random.default_rng(seed)
        for lay in self._layers:
            if lay.keep is None:
                self._grow(lay, length + 1)
            rows = length if lay.keep is None else min(length, lay.capacity)
            for buf in (lay.key[0], lay.value[0]):
                self._view(buf, lay.capacity)[:, :, :rows] = rng.standard_normal(
                    (1, self._kv, rows, self._hd), dtype=np.float32)
        self.tokens.extend([-1] * length)
        self.last_logits = None

    def _snapshot(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """A sliding layer's whole buffer: its row order depends on the length, so all of it is the state."""
        lay = self._layers[layer]
        return lay.key[0].copy(), lay.value[0].copy()

    def _can_truncate(self, s: int) -> bool:
        """Sliding layers that never compacted (N <= capacity) still hold positions 0..N-1 in rows 0..N-1."""
        return all(lay.keep is None or self.length <= lay.capacity for lay in self._layers)

    def _truncate(self, s: int, cp: _Checkpoint | None) -> None:
        if cp is not None:
            for i, (k, v) in cp.sliding.items():
                self._layers[i].key[0][...] = k
                self._layers[i].value[0][...] = v
        del self.tokens[s:]
        self.last_logits = None if cp is None or cp.logits is None else cp.logits.copy()

    def _grow(self, lay: _Layer, rows: int) -> None:
        if rows <= lay.capacity:
            return
        cap = max(rows, GROWTH * lay.capacity)
        n = min(self.length, lay.capacity)
        for bufs in (lay.key, lay.value):
            fresh = np.zeros(self._kv * cap * self._hd, self.spec.dtype)
            self._view(fresh, cap)[:, :, :n] = self._view(bufs[0], lay.capacity)[:, :, :n]
            bufs[0] = fresh
        lay.capacity = cap


def new_cache(spec: KVSpec, capacity: int = 256) -> KVCache:
    """The cache class the graph's kv_cache mode needs."""
    return SharedKVCache(spec, capacity) if spec.mode == "shared" else KVCache(spec, capacity)
