"""The one generation loop, under `Model.generate`, `Model.chat` and `Conversation`.

A `Sequence` is one sequence being generated: its cache, its sampler state (parameters, seeded Generator, the
ids a repetition penalty applies to), its incremental decoder, its stop tokens and budget. It moves in two
explicit steps, so a scheduler (a server) can interleave many sequences, one `step()` each in turn:

    seq = Sequence(engine, cache, request, tokenizer)
    seq.prefill()            reuse the cache's longest common prefix, feed the rest in chunks (cancellable)
    while not seq.done:
        event = seq.step()   feed the previously sampled token (if any), check the context, sample the next one

Several sequences step together with `feed_pending(engine, seqs)` before their `step()`s: it feeds every pending
token in one batched graph call (engine.decode_batch), and each `step()` then only samples.

The only context check of a generation is here, before each token is sampled: a token that is handed to the
caller always fits (the engine checks prefill itself, with the same function: errors.check_context).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .engine import Cancelled, Engine
from .errors import ArgumentError, check_context
from .kv import KVCache
from .sampling import SamplingParams, sample


@dataclass(frozen=True)
class TokenEvent:
    """One generated token. `text` is what it completes ('' mid-character and for control tokens)."""

    token_id: int
    text: str
    index: int          # 0 for the first new token
    stop: bool = False  # a stop token: the last event of the generation


@dataclass(frozen=True)
class Request:
    """What to generate: a prompt (token ids), a budget, how to sample, when to stop."""

    prompt: tuple[int, ...]
    max_new_tokens: int = 256
    params: SamplingParams = SamplingParams()
    seed: int | None = None
    stops: frozenset[int] = frozenset()
    cancel: object = None                   # anything with is_set() (a threading.Event); checked between steps

    def __post_init__(self):
        if self.max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {self.max_new_tokens}")
        if not self.prompt:
            raise ValueError("the prompt is empty")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))
                                      or self.seed < 0):
            raise ArgumentError(f"seed must be an integer >= 0 or None, got {self.seed!r}")


@dataclass
class Sequence:
    engine: Engine
    cache: KVCache
    request: Request
    tokenizer: object = None                # runtime.tokenizer.Tokenizer, or None (ids only)
    generated: list[int] = field(default_factory=list)
    done: bool = False

    def __post_init__(self):
        self._rng = np.random.default_rng(self.request.seed)
        self._decoder = self.tokenizer.incremental_decoder() if self.tokenizer is not None else None
        self._special = self.tokenizer.special_ids if self.tokenizer is not None else frozenset()
        self._penalized: list[int] = []
        self._pending: int | None = None     # sampled and handed out, not fed to the graph yet
        self._logits: np.ndarray | None = None
        self._buffer = self.engine.logits_buffer()

    @property
    def cancelled(self) -> bool:
        return self.request.cancel is not None and self.request.cancel.is_set()

    def prefill(self) -> bool:
        """Bring the cache to the prompt; False when cancelled meanwhile (the sequence is then done)."""
        ids = list(self.request.prompt)
        check_context(len(ids) + 1, self.engine.max_context, f"a prompt of {len(ids)} tokens plus one new token")
        start = self.cache.reuse(ids)
        if start < len(ids):
            try:
                self._logits = self.engine.prefill(self.cache, ids[start:], cancel=self.request.cancel)
            except Cancelled:
                self.done = True
                return False
            self.cache.checkpoint()
        else:
            self._logits = self.cache.last_logits
        self.done = self.request.max_new_tokens == 0
        return True

    @property
    def pending(self) -> int | None:
        """The token sampled last and not yet fed to the graph: what the next step feeds (None: nothing to feed)."""
        return None if self.done or self.cancelled else self._pending

    def adopt(self, logits: np.ndarray) -> None:
        """The pending token was fed (here, or in a batched call: `feed_pending`); `logits` [vocab] come after it."""
        self._logits = self.cache.last_logits = logits
        self._pending = None

    def _where_logits(self) -> str:
        return f"{self.engine.manifest.path}: the logits after position {self.cache.length - 1}"

    def step(self) -> TokenEvent | None:
        """The next token (None when the sequence ended: budget, stop token, cancellation)."""
        if self.done or self.cancelled:
            self.done = True
            return None
        if self._pending is not None:
            self.adopt(self.engine.decode(self.cache, self._pending, self._buffer))
        check_context(self.cache.length + 1, self.engine.max_context, "the prompt and the generated tokens",
                      self.generated)
        token = sample(self._logits, self.request.params, self._rng, self._penalized, self._where_logits)
        self.generated.append(token)
        if token not in self._special:
            self._penalized.append(token)
        stop = token in self.request.stops
        self.done = stop or len(self.generated) == self.request.max_new_tokens
        text = ""
        if self._decoder is not None:
            text = self._decoder.add(token) + (self._decoder.flush() if self.done else "")
        if not self.done:
            self._pending = token
        return TokenEvent(token, text, len(self.generated) - 1, stop)


def feed_pending(engine: Engine, seqs: list[Sequence]) -> None:
    """Feed every sequence's pending token in one batched decode (engine.decode_batch), so each one's next `step()`
    only samples. Sequences with nothing pending are left alone. Each sequence gets its own logits, as decoded alone
    (bit for bit on the tiny bundles: tests/runtime/test_batched_decode.py), so its seeded sampling is its own."""
    seqs = [s for s in seqs if s.pending is not None]
    if not seqs:
        return
    logits = engine.decode_batch([s.cache for s in seqs], [s.pending for s in seqs])
    for seq, row in zip(seqs, logits):
        seq.adopt(row)


def run(seq: Sequence) -> Iterator[TokenEvent]:
    """Drive one sequence to its end, yielding its tokens."""
    if not seq.prefill():
        return
    while (event := seq.step()) is not None:
        yield event
