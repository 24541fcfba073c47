"""`Model`: a loaded bundle. Scoring (`logits`), token generation (`generate`) and harmony chat (`chat`).

A Model holds only what every conversation shares: the manifest, the onnxruntime session (whose `run` is
thread-safe), the tokenizer. Per-conversation state (the KV cache, the sampler's Generator, the decoder)
lives in each call or in a `Conversation`, so one Model serves several threads at once.

    model = Model.load("bundle/")
    for event in model.generate("Once upon a time", max_new_tokens=32, temperature=0):
        print(event.text, end="")
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

import numpy as np

from .cache import KVCache, new_cache
from .engine import Cancelled, Engine
from .errors import BundleError, ContextOverflowError
from .manifest import Manifest, load_manifest
from .sampling import SamplingParams, sample

if TYPE_CHECKING:  # imported lazily at run time: chat pulls in harmony
    from .chat import Conversation
from .session import SessionInfo, create_session

# Without `max_context` the context is the model's, capped here: the cache grows on demand, but a
# runaway generation should not be able to take tens of GB.
DEFAULT_MAX_CONTEXT = 16384
# Prefill chunk (tokens per graph call). An "all"-logits graph returns [chunk, vocab] floats per call
# (~100 MB at 128 x 201088), so its chunks are smaller.
PREFILL_CHUNK = {"all": 128, "last": 256, "selectable": 256}


@dataclass(frozen=True)
class TokenEvent:
    """One generated token. `text` is what it completes ('' mid-character and for control tokens)."""

    token_id: int
    text: str
    index: int          # 0 for the first new token
    stop: bool = False  # a stop token: the last event of the generation


class Model:
    """A loaded bundle; create it with `Model.load`."""

    def __init__(self, manifest: Manifest, engine: Engine, session_info: SessionInfo, tokenizer,
                 prefill_chunk: int, load_seconds: float):
        self.manifest = manifest
        self.engine = engine
        self.session_info = session_info
        self.tokenizer = tokenizer          # runtime.tokenizer.Tokenizer, or None for a bundle without one
        self.prefill_chunk = prefill_chunk
        self.load_seconds = load_seconds

    # ------------------------------------------------------------------ load
    @classmethod
    def load(cls, bundle_dir: str | Path, provider: str | None = None, threads: int | None = None,
             max_context: int | None = None, verify: bool = False, allow_fallback: bool = False,
             prefill_chunk: int | None = None) -> "Model":
        """Open a bundle: validate its manifest, create the session, check the provider took the graph.

        provider: an ORT execution provider name (default: the manifest's target). threads: intra-op
        threads. max_context: tokens a sequence may reach (default: the model's, capped at
        DEFAULT_MAX_CONTEXT). verify: check every file's sha256 first. allow_fallback: accept running
        on CPU when the requested provider is missing or did not take the graph.
        """
        t0 = time.perf_counter()
        manifest = load_manifest(bundle_dir)
        if verify:
            manifest.verify_files()
        limit = manifest.max_position_embeddings
        if max_context is None:
            max_context = min(limit, DEFAULT_MAX_CONTEXT)
        elif not 1 < max_context <= limit:
            raise ValueError(f"max_context must be in [2, {limit}] (the model's max_position_embeddings), "
                             f"got {max_context}")
        chunk = prefill_chunk or PREFILL_CHUNK[manifest.graph.logits_mode]
        if chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1, got {chunk}")
        tokenizer = None
        if manifest.tokenizer_dir is not None:
            from .tokenizer import Tokenizer, TokenizerError

            try:
                tokenizer = Tokenizer.from_dir(manifest.bundle_dir / manifest.tokenizer_dir)
            except TokenizerError as e:
                raise BundleError(str(e)) from None
        session, info = create_session(manifest, provider, threads, allow_fallback)
        engine = Engine(session, manifest, max_context)
        return cls(manifest, engine, info, tokenizer, chunk, time.perf_counter() - t0)

    # ----------------------------------------------------------------- facts
    @property
    def max_context(self) -> int:
        return self.engine.max_context

    @property
    def vocab_size(self) -> int:
        return self.engine.vocab

    @property
    def provider(self) -> str:
        """The execution provider that runs the graph."""
        return self.session_info.providers[0]

    def new_cache(self, capacity: int | None = None) -> KVCache:
        """An empty KV cache; `capacity` (positions) is preallocated on the full-attention layers."""
        capacity = min(capacity or 256, self.max_context)
        return new_cache(self.manifest.graph.kv, capacity=max(capacity, 1))

    def encode(self, text: str) -> list[int]:
        """Text -> token ids. Control-token strings such as `<|start|>` stay plain text."""
        return self._tok().encode_text(text)

    def decode(self, token_ids: Iterable[int]) -> str:
        return self._tok().decode(token_ids)

    def _tok(self):
        if self.tokenizer is None:
            raise BundleError(f"{self.manifest.path}: this bundle has no tokenizer; pass token ids instead of text")
        return self.tokenizer

    def default_stop_tokens(self) -> set[int]:
        """The model's eos plus, when the tokenizer has them, <|return|>, <|call|> and <|endoftext|>."""
        stops = {self.manifest.eos_token_id} - {None}
        if self.tokenizer is not None:
            for name in ("<|return|>", "<|call|>", "<|endoftext|>"):
                try:
                    stops.add(self.tokenizer.token_id(name))
                except KeyError:
                    pass
        return stops

    # --------------------------------------------------------------- scoring
    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """Logits float32 [T, vocab] for every position of `token_ids` (fed in prefill-sized chunks)."""
        if not self.engine.scores_all_positions:
            raise BundleError(f"{self.manifest.path}: this bundle was exported with logits 'last': its graph "
                              f"returns only the last position's logits and cannot score all positions "
                              f"(re-export with `--logits all`)")
        ids = self._ids(token_ids)
        if len(ids) > self.max_context:
            raise ContextOverflowError(f"context overflow: {len(ids)} tokens to score, the context holds "
                                       f"{self.max_context}", needed=len(ids), limit=self.max_context)
        cache = self.new_cache(len(ids))
        return self.engine.prefill(cache, ids, self.prefill_chunk, all_logits=True)

    # ------------------------------------------------------------ generation
    def generate(self, prompt: str | Sequence[int], max_new_tokens: int = 256, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                 seed: int | None = None, stop_tokens: Iterable[int] | None = None,
                 cancel: threading.Event | None = None, cache: KVCache | None = None) -> Iterator[TokenEvent]:
        """Yield one TokenEvent per new token (see the module docstring). Greedy when temperature == 0.

        prompt: text (encoded without control tokens) or token ids. stop_tokens: ids that end generation
        (the stop token is yielded, with `stop=True`); default `default_stop_tokens()`, `()` for none.
        cancel: an object with `is_set()` (a threading.Event): checked before every step and between
        prefill chunks; once set, the generator ends. cache: a KVCache to continue (its longest common
        prefix with the prompt is reused); default a fresh one. Raises ContextOverflowError when the
        prompt does not fit or the sequence would pass `max_context`.
        """
        params = SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty)
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        ids = self._ids(prompt)
        stops = self.default_stop_tokens() if stop_tokens is None else {int(t) for t in stop_tokens}
        if cache is None:
            cache = self.new_cache(len(ids) + max_new_tokens)
        return self._generate(ids, cache, params, max_new_tokens, seed, stops, cancel)

    def _ids(self, prompt) -> list[int]:
        if isinstance(prompt, str):
            ids = self.encode(prompt)
        else:
            ids = [int(t) for t in prompt]
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(f"token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        if not ids:
            raise ValueError("the prompt is empty")
        return ids

    def _generate(self, ids: list[int], cache: KVCache, params: SamplingParams, max_new_tokens: int,
                  seed: int | None, stops: set[int], cancel) -> Iterator[TokenEvent]:
        if len(ids) + 1 > self.max_context:
            raise ContextOverflowError(
                f"context overflow: the prompt has {len(ids)} tokens and the context holds {self.max_context} "
                f"(no room for a new token)", needed=len(ids) + 1, limit=self.max_context)
        start = cache.reuse(ids)
        if start < len(ids):
            try:
                logits = self.engine.prefill(cache, ids[start:], self.prefill_chunk, cancel=cancel)
            except Cancelled:
                return
            cache.checkpoint()
        else:
            logits = cache.last_logits
        rng = np.random.default_rng(seed)
        decoder = self.tokenizer.incremental_decoder() if self.tokenizer is not None else None
        special = self.tokenizer.special_ids if self.tokenizer is not None else frozenset()
        generated: list[int] = []
        penalized: list[int] = []
        buf = self.engine.logits_buffer(1)
        for i in range(max_new_tokens):
            if cancel is not None and cancel.is_set():
                return
            if cache.length + 1 > self.max_context:
                raise ContextOverflowError(
                    f"context overflow: {cache.length} prompt and generated tokens fill the context of "
                    f"{self.max_context}; {len(generated)} new tokens were generated",
                    needed=cache.length + 1, limit=self.max_context, tokens=generated)
            token = sample(logits, params, rng, penalized)
            generated.append(token)
            if token not in special:
                penalized.append(token)
            stop = token in stops
            last = stop or i == max_new_tokens - 1
            text = ""
            if decoder is not None:
                text = decoder.add(token) + (decoder.flush() if last else "")
            yield TokenEvent(token, text, i, stop)
            if last:
                return
            out = self.engine.run(cache, np.array([token], dtype=np.int64), buf)
            logits = out[0, -1].astype(np.float32)
            cache.last_logits = logits

    # ------------------------------------------------------------------ chat
    def chat(self, messages, reasoning_effort: str = "low", tools=None, stream: bool = False,
             instructions: str | None = None, conversation: "Conversation | None" = None,
             max_new_tokens: int = 2048, **sampling):
        """Render `messages` with harmony, generate until <|return|> or <|call|>, parse the reply.

        Returns a ChatResult (.analysis, .final, .tool_calls, ...), or with `stream=True` a ChatStream that
        yields ChatEvent(channel, text) deltas and holds `.result` once exhausted. `sampling`: generate()'s
        temperature, top_k, top_p, min_p, repetition_penalty, seed, cancel.
        """
        from .chat import run_chat

        return run_chat(self, messages, reasoning_effort=reasoning_effort, tools=tools, stream=stream,
                        instructions=instructions, cache=conversation.cache if conversation else None,
                        max_new_tokens=max_new_tokens, **sampling)

    def conversation(self, reasoning_effort: str = "low", instructions: str | None = None, tools=None,
                     ) -> "Conversation":
        """A multi-turn conversation that keeps its KV cache between turns (prefix reuse)."""
        from .chat import Conversation

        return Conversation(self, reasoning_effort=reasoning_effort, instructions=instructions, tools=tools)
