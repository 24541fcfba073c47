"""What every KV cache does whatever its mode: remember the token ids it holds, roll back to a reusable prefix,
and keep checkpoints of its sliding layers.

Prefix reuse (`reuse`): the cache remembers the token ids it holds. For a new prompt it keeps the longest
common prefix L and the caller feeds only the rest. Full layers roll back by truncation. A sliding layer that
has dropped old positions cannot go back to an arbitrary L: going back to `s` needs positions `[s - keep, s)`,
which it holds only when it never dropped anything or `s` is where it already is. So the cache also keeps a few
*checkpoints*: copies of the sliding layers (small) at chosen lengths, typically the end of each prompt, which
is exactly where a chat's next turn diverges (the assistant's reply is re-rendered without its analysis).
Rolling back goes to the largest safe point <= L: L itself when every sliding layer still holds what L needs,
else the latest checkpoint <= L (0, the empty cache, always qualifies).

Each mode (concat.py, shared.py, static.py) says how its buffers are bound for a graph call and what a
sliding layer's snapshot is; `new_cache` (kv/__init__.py) picks the mode the manifest names.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from gptoss.bundle.kv import KVContract


@dataclass
class Checkpoint:
    length: int
    sliding: dict[int, object] = field(default_factory=dict)   # layer -> the mode's snapshot of it
    logits: np.ndarray | None = None    # the logits after the token at length - 1, when known


class KVCache:
    """Per-conversation KV cache. Not thread-safe: one conversation, one thread."""

    def __init__(self, spec: KVContract, max_checkpoints: int = 4):
        self.spec = spec
        self.dtype = np.dtype(spec.dtype)
        self._kv, self._hd = spec.num_kv_heads, spec.head_dim
        self.tokens: list[int] = []     # the token ids whose keys/values are cached, in order
        self.last_logits: np.ndarray | None = None   # logits after the last cached token, when known
        self.last_reuse = 0             # prompt tokens the last `reuse` kept
        self.max_checkpoints = max_checkpoints
        self._checkpoints: list[Checkpoint] = []

    # ------------------------------------------------------------- the mode's part
    def bind(self, binding: ort.IOBinding, new: int, layers) -> None:
        """Bind `layers`' past_* inputs and present_* outputs for a call that appends `new` tokens."""
        raise NotImplementedError

    def commit(self, token_ids) -> None:
        """Adopt what the graph wrote for `token_ids` (call once after each run)."""
        raise NotImplementedError

    def reserve(self, length: int) -> None:
        """Make room for `length` positions before a prefill appends them chunk by chunk. A no-op here: only caches
        whose buffers grow have something to do."""

    def held(self, layer: int) -> int:
        """Positions layer `layer` holds now."""
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        raise NotImplementedError

    def fill_random(self, length: int, seed: int = 0) -> None:
        """For benchmarks: make an empty cache hold `length` positions of random keys and values. A decode step
        costs the same whatever the cached values are. The cached ids are recorded as -1: never a reusable prefix."""
        raise NotImplementedError

    def _snapshot(self, layer: int) -> object:
        raise NotImplementedError

    def _can_truncate(self, s: int) -> bool:
        """Whether every layer can go back to length `s` by forgetting positions."""
        raise NotImplementedError

    def _truncate(self, s: int, cp: Checkpoint | None) -> None:
        """Go back to length `s` (= cp.length when a checkpoint is given: restore its sliding layers)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- facts
    @property
    def length(self) -> int:
        """N: tokens the cache represents (sliding layers hold fewer positions)."""
        return len(self.tokens)

    def _sliding_layers(self) -> list[int]:
        return [i for i, keep in enumerate(self.spec.keep) if keep is not None]

    def _checkpoint_bytes(self) -> int:
        return sum(sum(np.asarray(a).nbytes for a in snap) for c in self._checkpoints for snap in c.sliding.values())

    def _record(self, token_ids) -> None:
        self.tokens.extend(int(t) for t in token_ids)
        self.last_logits = None

    # ---------------------------------------------------------- prefix reuse
    def checkpoint(self) -> None:
        """Remember the sliding layers as they are now, so `reuse` can come back to this length."""
        n = self.length
        if any(c.length == n for c in self._checkpoints) or not self._sliding_layers():
            return
        cp = Checkpoint(n, logits=None if self.last_logits is None else self.last_logits.copy())
        for i in self._sliding_layers():
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
            self.last_logits = None if cp is None or cp.logits is None else cp.logits.copy()
        self._checkpoints = [c for c in self._checkpoints if c.length <= self.length]
        return self.length

    def clear(self) -> None:
        self._truncate(0, None)
        self._checkpoints.clear()
