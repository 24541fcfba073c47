"""`Model`: a loaded bundle. Scoring (`logits`), token generation (`generate`) and harmony chat (`chat`).

A Model holds only what every conversation shares: the manifest, the engine (sessions, whose `run` is
thread-safe), the tokenizer. Per-conversation state (the KV cache, the sampler's Generator, the decoder)
lives in each call's `generation.Sequence` or in a `Conversation`, so one Model serves several threads at once.

    model = Model.load("bundle/")
    for event in model.generate("Once upon a time", max_new_tokens=32, temperature=0):
        print(event.text, end="")
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from gptoss.bundle import Manifest, load_manifest
from gptoss.bundle.integrity import check_files

from . import chat as _chat
from .engine import Engine, engine_for
from .errors import ArgumentError, BundleError
from .generation import Request, Sequence as _Sequence, TokenEvent, run
from .kv import HOST, KVCache, Placement
from .sampling import SamplingParams
from .session import SessionInfo, create_sessions

__all__ = ["Model", "TokenEvent"]

# Without `max_context` the context is the model's, capped here: the cache grows on demand, but a
# runaway generation should not be able to take tens of GB.
DEFAULT_MAX_CONTEXT = 16384
# Prefill chunk (tokens per graph call) of dynamic graphs. An "all"-logits graph returns [chunk, vocab] floats per
# call (~100 MB at 128 x 201088), so its chunks are smaller. Static graphs fix their own.
PREFILL_CHUNK = {"all": 128, "last": 256, "selectable": 256}


class Model:
    """A loaded bundle; create it with `Model.load`."""

    def __init__(self, manifest: Manifest, engine: Engine, session_info: SessionInfo, tokenizer, load_seconds: float):
        self.manifest = manifest
        self.engine = engine
        self.session_info = session_info
        self.tokenizer = tokenizer          # runtime.tokenizer.Tokenizer, or None for a bundle without one
        self.load_seconds = load_seconds

    # ------------------------------------------------------------------ load
    @classmethod
    def load(cls, bundle_dir: str | Path, provider: str | None = None, threads: int | None = None,
             max_context: int | None = None, verify: bool = False, allow_fallback: bool = False,
             prefill_chunk: int | None = None, placement: Placement | None = None,
             provider_options: dict | None = None, session_options: dict | None = None,
             graph_capture: bool = False) -> "Model":
        """Open a bundle: validate its manifest, create the sessions, check the provider took the graphs.

        provider: an ORT execution provider name (default: the manifest's target). threads: intra-op
        threads. max_context: tokens a sequence may reach (default: the model's, capped at
        DEFAULT_MAX_CONTEXT, and a static bundle's context). Every load checks that each file the bundle uses
        is listed in its manifest with its size (bundle/integrity.py); verify: also check every file's sha256.
        allow_fallback: accept running on CPU when the requested provider is missing or did not take the graph.
        provider_options: options for the provider, instead of the bundle's (e.g. {"device_type": "GPU"} to pick a
        plugin EP's device).
        session_options: ONNX Runtime session options over the bundle's own, from the same table of known keys and
        values (runtime/session.py), e.g. {"session.intra_op.allow_spinning": "0"}.
        placement: where a shared KV cache lives; default: on the provider's device when the bundle says
        kv_cache.device "device" and the provider took the graph, else host numpy (kv.Placement()).
        graph_capture: record the one-token decode once and replay it (CUDA graphs, WebGPU graph capture;
        runtime/capture.py), for a bundle whose target allows it (manifest target.graph_capture) with its cache on
        the device. Off by default: docs/targets.md says where it was checked.
        """
        t0 = time.perf_counter()
        manifest = load_manifest(bundle_dir)
        check_files(manifest, verify=verify)
        max_context = _max_context(manifest, max_context)
        chunk = prefill_chunk or PREFILL_CHUNK[manifest.logits]
        if chunk < 1:
            raise ValueError(f"prefill_chunk must be >= 1, got {chunk}")
        tokenizer = _tokenizer(manifest)
        if graph_capture:
            provider_options, session_options = _capture_options(manifest, provider_options, session_options)
        sessions, info = create_sessions(manifest, provider, threads, allow_fallback, provider_options,
                                         session_options)
        if placement is None:
            placement = _placement(manifest, info)
        engine = engine_for(manifest, sessions, max_context, chunk, placement, capture=graph_capture)
        return cls(manifest, engine, info, tokenizer, time.perf_counter() - t0)

    # ----------------------------------------------------------------- facts
    @property
    def max_context(self) -> int:
        return self.engine.max_context

    @property
    def vocab_size(self) -> int:
        return self.engine.vocab

    @property
    def prefill_chunk(self) -> int:
        return self.engine.prefill_chunk

    @property
    def provider(self) -> str:
        """The execution provider that runs the graph."""
        return self.session_info.providers[0]

    def new_cache(self, capacity: int | None = None) -> KVCache:
        """An empty KV cache; `capacity` (positions) is preallocated on the full-attention layers where the
        cache grows (a device cache takes the whole context up front)."""
        capacity = self.max_context if self.engine.placement.on_device else min(capacity or 256, self.max_context)
        return self.engine.new_cache(max(capacity, 1))

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
        return self.engine.prefill(self.new_cache(len(ids)), ids, all_logits=True)

    # ------------------------------------------------------------ generation
    def generate(self, prompt: str | Sequence[int], max_new_tokens: int = 256, temperature: float = 1.0,
                 top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0, repetition_penalty: float = 1.0,
                 seed: int | None = None, stop_tokens: Iterable[int] | None = None,
                 cancel: threading.Event | None = None, cache: KVCache | None = None) -> Iterator[TokenEvent]:
        """Yield one TokenEvent per new token. Greedy when temperature == 0.

        prompt: text (encoded without control tokens) or token ids. stop_tokens: ids that end generation
        (the stop token is yielded, with `stop=True`); default `default_stop_tokens()`, `()` for none.
        cancel: an object with `is_set()` (a threading.Event): checked before every step and between
        prefill chunks; once set, the generator ends. cache: a KVCache to continue (its longest common
        prefix with the prompt is reused); default a fresh one. Raises ContextOverflowError when the
        prompt does not fit or the sequence would pass `max_context`.
        """
        request = Request(tuple(self._ids(prompt)), max_new_tokens,
                          SamplingParams(temperature, top_k, top_p, min_p, repetition_penalty), seed,
                          frozenset(self.default_stop_tokens() if stop_tokens is None else map(int, stop_tokens)),
                          cancel)
        if cache is None:
            cache = self.new_cache(len(request.prompt) + max_new_tokens)
        return run(_Sequence(self.engine, cache, request, self.tokenizer))

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

    # ------------------------------------------------------------------ chat
    def chat(self, messages, reasoning_effort: str = "low", tools=None, stream: bool = False,
             instructions: str | None = None, conversation: "_chat.Conversation | None" = None,
             max_new_tokens: int = 2048, **sampling):
        """Render `messages` with harmony, generate until <|return|> or <|call|>, parse the reply.

        Returns a ChatResult (.analysis, .final, .tool_calls, ...), or with `stream=True` a ChatStream that
        yields ChatEvent(channel, text) deltas and holds `.result` once exhausted. `sampling`: generate()'s
        temperature, top_k, top_p, min_p, repetition_penalty, seed, cancel.
        """
        return _chat.run_chat(self, messages, reasoning_effort=reasoning_effort, tools=tools, stream=stream,
                              instructions=instructions, cache=conversation.cache if conversation else None,
                              max_new_tokens=max_new_tokens, **sampling)

    def conversation(self, reasoning_effort: str = "low", instructions: str | None = None,
                     tools=None) -> "_chat.Conversation":
        """A multi-turn conversation that keeps its KV cache between turns (prefix reuse)."""
        return _chat.Conversation(self, reasoning_effort=reasoning_effort, instructions=instructions, tools=tools)


def _max_context(manifest: Manifest, asked: int | None) -> int:
    limit = manifest.max_position_embeddings
    if manifest.kv.mode == "static":
        limit = min(limit, manifest.shapes.context)
    if asked is None:
        return min(limit, DEFAULT_MAX_CONTEXT)
    if not 1 < asked <= limit:
        raise ValueError(f"max_context must be in [2, {limit}] (the model's max_position_embeddings"
                         f"{' and the static context' if manifest.kv.mode == 'static' else ''}), got {asked}")
    return asked


def _capture_options(manifest, provider_options: dict | None, session_options: dict | None) -> tuple[dict, dict]:
    """The provider option that turns capture on (the manifest's `target.graph_capture`), over the caller's or the
    bundle's options; memory patterns off, as ONNX Runtime requires for a captured graph."""
    option = manifest.target.graph_capture
    if option is None:
        raise ArgumentError(f"{manifest.path}: graph_capture=True, but target {manifest.target.name!r} has no "
                            f"capturable graph (manifest target.graph_capture is absent)")
    base = provider_options if provider_options is not None else manifest.target.provider_options
    return {**base, option: "1"}, {**(session_options or {}), "enable_mem_pattern": False}


def _placement(manifest: Manifest, info: SessionInfo) -> Placement:
    """The provider's device memory for a bundle whose cache lives there (when the provider took the graph)."""
    from .providers import resolve

    memory = resolve(info.requested_provider).memory
    if manifest.kv.device == "device" and memory is not None and not info.fell_back:
        return Placement(memory)
    return HOST


def _tokenizer(manifest: Manifest):
    path = manifest.tokenizer_path()
    if path is None:
        return None
    from .tokenizer import Tokenizer

    return Tokenizer.from_dir(path)
