"""The "static" cache (bundle.kv) of static-shape graphs (NPUs): fixed buffers, explicit masks and positions.

Every layer owns a fixed host buffer of `capacity_i` rows: the whole context on a full layer (slot = position),
a ring of window - 1 rows on a sliding one (slot = position % capacity). A call of T tokens (n of them real, the
rest padding) binds the buffers as `past_*`, receives ONLY the T new rows as `present_*`, and is told which rows
each query sees by one additive mask per window, `attention_bias.w{W}` [1, 1, T, capacity + T]:

    cached slot s   visible to query t (at position p + t) iff it holds a position q with
                    q < p + t and (W == 0 or p + t - q < W)
    new row j       visible iff j <= t and j < n and (W == 0 or t - j < W);  a padding query sees only itself
    masked entries hold bundle.kv.MASKED (-1e4: finite everywhere, exp() of it 0 in any precision)

After the call the runtime copies the n real rows into their slots (`commit`): the graph never scatters.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from gptoss.bundle import names
from gptoss.bundle.kv import MASKED, KVContract

from .base import Checkpoint, KVCache
from .storage import bind_array


class StaticCache(KVCache):
    def __init__(self, spec: KVContract, max_checkpoints: int = 4):
        super().__init__(spec, max_checkpoints)
        shape = lambda rows: (1, self._kv, rows, self._hd)  # noqa: E731
        self._key = [np.zeros(shape(c), self.dtype) for c in spec.capacity]
        self._value = [np.zeros(shape(c), self.dtype) for c in spec.capacity]
        # window -> (capacity, the absolute position each slot holds, -1 when empty); shared by its layers
        self._slots = {w: np.full(c, -1, np.int64) for w, c in zip(spec.window, spec.capacity)}
        self._new: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}    # T -> per layer (key, value) [1,kv,T,hd]
        self._masks: dict[int, dict[int, np.ndarray]] = {}                  # T -> window -> [1, 1, T, C + T]
        self._pending = (0, 0)                                              # (T, real tokens) of the call being run
        self._masked = np.array(MASKED, self.dtype)

    # ---------------------------------------------------------------- facts
    def held(self, layer: int) -> int:
        return int((self._slots[self.spec.window[layer]] >= 0).sum())

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (*self._key, *self._value)) + self._checkpoint_bytes()

    # ------------------------------------------------------------ one step
    def prepare_static(self, tokens: int, real: int) -> None:
        """Get a call of `tokens` tokens (the graph's fixed T), the first `real` of them real, ready: its new-row
        buffers and its masks (one per window), computed once for every part of the graph."""
        if tokens not in self._new:
            self._new[tokens] = [tuple(np.zeros((1, self._kv, tokens, self._hd), self.dtype) for _ in range(2))
                                 for _ in self._key]
            self._masks[tokens] = {w: np.empty((1, 1, tokens, len(s) + tokens), self.dtype)
                                   for w, s in self._slots.items()}
        for w, mask in self._masks[tokens].items():
            self._fill_mask(mask[0, 0], w, tokens, real)
        self._pending = (tokens, real)

    def bind_static(self, binding: ort.IOBinding, layers, inputs) -> None:
        """Bind `layers`' buffers and the masks among `inputs` for the call prepare_static() set up."""
        tokens, _ = self._pending
        for w, mask in self._masks[tokens].items():
            if names.attention_bias(w) in inputs:
                bind_array(binding.bind_input, names.attention_bias(w), mask)
        for i in layers:
            new_k, new_v = self._new[tokens][i]
            pk, pv, ck, cv = names.kv_names(i)
            bind_array(binding.bind_input, pk, self._key[i])
            bind_array(binding.bind_input, pv, self._value[i])
            bind_array(binding.bind_output, ck, new_k)
            bind_array(binding.bind_output, cv, new_v)

    def bind(self, binding: ort.IOBinding, new: int, layers) -> None:
        self.prepare_static(new, new)
        self.bind_static(binding, layers, {names.attention_bias(w) for w in self._slots})

    def _fill_mask(self, mask: np.ndarray, window: int, tokens: int, real: int) -> None:
        """mask [T, C + T] for the queries at positions p .. p + T - 1 (p = the cache's length)."""
        slots, p = self._slots[window], self.length
        t = np.arange(tokens)[:, None]
        q = p + t                                                     # [T, 1] query positions
        seen = (slots[None, :] >= 0) & (slots[None, :] < q)
        j = np.arange(tokens)[None, :]
        new = ((j <= t) & (j < real)) | ((t >= real) & (j == t))
        if window > 0:
            seen &= q - slots[None, :] < window
            new &= t - j < window
        cap = len(slots)
        mask[:, :cap] = np.where(seen, 0, self._masked)
        mask[:, cap:] = np.where(new, 0, self._masked)

    def commit(self, token_ids) -> None:
        """Copy the real new rows into their slots (only the last `capacity` of them matter on a ring)."""
        n, p = len(token_ids), self.length
        tokens, real = self._pending
        if n != real:
            raise ValueError(f"commit of {n} tokens after a call of {real} real tokens")
        for w, slots in self._slots.items():
            cap = len(slots)
            first = max(0, n - cap)
            positions = p + np.arange(first, n)
            where = positions % cap if w > 0 else positions
            slots[where] = positions
            for i in (i for i, lw in enumerate(self.spec.window) if lw == w):
                new_k, new_v = self._new[tokens][i]
                self._key[i][:, :, where] = new_k[:, :, first:n]
                self._value[i][:, :, where] = new_v[:, :, first:n]
        self._record(token_ids)

    def fill_random(self, length: int, seed: int = 0) -> None:
        if self.length:
            raise ValueError("fill_random needs an empty cache")
        rng = np.random.default_rng(seed)
        for w, slots in self._slots.items():
            cap = len(slots)
            positions = np.arange(max(0, length - cap), length)
            where = positions % cap if w > 0 else positions
            slots[where] = positions
        for i in range(len(self._key)):
            for buf in (self._key[i], self._value[i]):
                buf[...] = rng.standard_normal(buf.shape, dtype=np.float32)
        self._record([-1] * length)

    # -------------------------------------------------------------- rollback
    def _snapshot(self, layer: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._key[layer].copy(), self._value[layer].copy(), self._slots[self.spec.window[layer]].copy()

    def _can_truncate(self, s: int) -> bool:
        """Every ring still holds the positions [s - min(s, keep), s) that length s needs."""
        for w, slots in self._slots.items():
            if w > 0:
                need = set(range(s - min(s, w - 1), s))
                if not need <= set(slots[slots >= 0].tolist()):
                    return False
        return True

    def _truncate(self, s: int, cp: Checkpoint | None) -> None:
        for w, slots in self._slots.items():
            slots[slots >= s] = -1
        if cp is not None:
            for i, (k, v, slots) in cp.sliding.items():
                self._key[i][...], self._value[i][...] = k, v
                self._slots[self.spec.window[i]][...] = slots
        del self.tokens[s:]
        self.last_logits = None
