"""The engine's one worker thread: a bounded queue in front, `parallel` slots (KV caches) behind, every active
sequence advanced one unit of work in turn.

    submit(job) ──► waiting (at most max_queue; then QueueFull -> 429) ──► a free slot: the one whose cache
                    shares the longest prefix with the prompt (its KV rows are reused), else a fresh one
    one round:      the decoding jobs' pending tokens go through the engine together (one batched graph call
                    when the backend's caches are slots of one pool: ModelBackend.feed_pending), then each active
                    job advances once, in turn:
                      prefilling: one prefill chunk (a checkpoint at the end of the shared prefix and of the prompt)
                      decoding:   one Sequence.step() (it only samples, its token already fed) -> job.emit
                    a finished job emits one `Finished` and frees its slot (the cache keeps its rows for the next)

Prefill is chunked and interleaved with decoding, so a long prompt delays the other streams by one chunk per
round, not by its whole prefill. Decode steps are batched: the slots are one SlotPool's caches (runtime/kv/pool.py),
and adjacent slots decode in one [B, 1] graph call (engine.decode_batch) that gives each sequence the logits it gets
alone, so a seeded request's reply does not depend on what else runs.

A job's `request.cancel` (a threading.Event) stops it between two units of work: a client that disconnects
sets it. `begin_drain(grace)` (SIGTERM) refuses new jobs and, `grace` seconds later, stops whatever still runs
with reason "shutdown". Only plain attribute writes happen in `begin_drain`, so a signal handler may call it.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import ContextOverflowError
from ..generation import Request, Sequence, feed_pending

log = logging.getLogger("gptoss.serve")

REASONS = ("stop", "length", "cancelled", "shutdown", "error")


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the queue is full; retry after {retry_after} s")
        self.retry_after = retry_after


class Draining(Exception):
    """The server is shutting down and takes no new work."""


@dataclass(frozen=True)
class Finished:
    """The last thing a job emits."""

    reason: str                 # one of REASONS
    completion_tokens: int = 0
    cached_tokens: int = 0      # prompt tokens whose KV rows came from the slot's cache
    error: str | None = None


class ModelBackend:
    """What the scheduler needs of a loaded `Model`: caches, prefill chunks, sequences."""

    def __init__(self, model):
        self.model = model
        self.tokenizer = model.tokenizer
        self.max_context = model.max_context
        self.prefill_chunk = model.prefill_chunk
        engine = model.engine
        self._pool = engine.new_pool(capacity=min(256, model.max_context)) if engine.batches else None

    def new_cache(self):
        """A slot's cache: the next slot of the pool where the engine batches decode steps, else a cache alone."""
        return self.model.new_cache() if self._pool is None else self._pool.add_slot()

    def feed_pending(self, seqs) -> None:
        """Feed the sequences' pending tokens together (one graph call per run of adjacent slots)."""
        feed_pending(self.model.engine, seqs)

    def feed(self, cache, token_ids) -> None:
        """Append at most one prefill chunk of prompt tokens to `cache`."""
        self.model.engine.prefill(cache, token_ids)

    def sequence(self, cache, request: Request):
        return Sequence(self.model.engine, cache, request, self.tokenizer)


@dataclass
class Slot:
    cache: object
    used: int = 0               # the round it was last taken: ties go to the least recently used
    busy: bool = False


class Job:
    """One generation: a prompt (token ids) with its budget, sampling and stop tokens; `prefix` is the length of
    its shared part (the system and developer messages), where the slot's cache keeps a checkpoint."""

    def __init__(self, request: Request, prefix: int, emit: Callable[[object], None]):
        self.request, self.prefix, self.emit = request, prefix, emit
        self.slot: Slot | None = None
        self.fed: int | None = None         # prompt tokens in the cache (None: not looked at yet)
        self.cached = 0
        self.seq = None
        self.generated = 0
        self.finished = False
        self.shutdown = False
        self.started = 0.0

    @property
    def cancelled(self) -> bool:
        return self.request.cancel is not None and self.request.cancel.is_set()


class Scheduler:
    def __init__(self, backend, parallel: int = 4, max_queue: int = 16):
        if parallel < 1 or max_queue < 0:
            raise ValueError(f"parallel must be >= 1 and max_queue >= 0, got {parallel} and {max_queue}")
        self.backend, self.parallel, self.max_queue = backend, parallel, max_queue
        self._cond = threading.Condition()
        self._waiting: collections.deque[Job] = collections.deque()
        self._active: list[Job] = []
        self._slots: list[Slot] = []
        self._clock = 0
        self._job_seconds = 1.0             # running mean of a job's time in a slot, for Retry-After
        self._stopped = False
        self._drain_deadline: float | None = None
        self._thread: threading.Thread | None = None
        self.counts = dict.fromkeys(("submitted", "rejected", "completed_tokens", *REASONS), 0)

    # ------------------------------------------------------------ the caller's side
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gptoss-serve-worker", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue a job; raises Draining (shutting down) or QueueFull (max_queue jobs already wait)."""
        with self._cond:
            if self._stopped or self._drain_deadline is not None:
                raise Draining()
            if self._queued() >= self.max_queue:
                self.counts["rejected"] += 1
                raise QueueFull(self._retry_after())
            self.counts["submitted"] += 1
            self._waiting.append(job)
            self._cond.notify()

    def begin_drain(self, grace: float) -> None:
        """Refuse new jobs; stop the running ones `grace` seconds from now. Safe in a signal handler."""
        if self._drain_deadline is None:
            self._drain_deadline = time.monotonic() + grace

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every job ("shutdown") and the worker thread."""
        with self._cond:
            self._stopped = True
            for job in [*self._waiting, *self._active]:
                job.shutdown = True
                job.request.cancel.set()
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def status(self) -> dict:
        with self._cond:
            return {"active": len(self._active), "waiting": len(self._waiting), "parallel": self.parallel,
                    "max_queue": self.max_queue, "draining": self._drain_deadline is not None, **self.counts}

    # ---------------------------------------------------------------- the worker
    def _run(self) -> None:
        while True:
            with self._cond:
                self._admit()
                if self._stopped and not self._active and not self._waiting:
                    return
                if not self._active:
                    self._cond.wait(0.05)
                    continue
                self._enforce_drain()
                jobs = list(self._active)
            self._round(jobs)
            with self._cond:
                for job in jobs:
                    if job.finished:
                        self._release(job)

    def _round(self, jobs: list[Job]) -> None:
        """One unit of work for each active job, in turn, after one batched decode of the decoding ones."""
        self._feed_together(jobs)
        for job in jobs:
            if not job.finished:
                self._advance(job)

    def _feed_together(self, jobs: list[Job]) -> None:
        """Feed the pending tokens of the decoding jobs in one call when the backend can (`feed_pending`); their
        steps then only sample. A failure fails those jobs, as a failed step does."""
        feed = getattr(self.backend, "feed_pending", None)
        batch = [j for j in jobs if j.seq is not None and not j.cancelled and getattr(j.seq, "pending", None) is not None]
        if feed is None or len(batch) < 2:
            return
        try:
            feed([j.seq for j in batch])
        except Exception as e:                       # a bug or a provider failure: those jobs fail, not the server
            log.exception("batched decode failed")
            for job in batch:
                self._finish(job, "error", f"{type(e).__name__}: {e}")

    def _advance(self, job: Job) -> None:
        try:
            if job.cancelled:
                self._finish(job, "shutdown" if job.shutdown else "cancelled")
            elif job.seq is None:
                self._prefill_chunk(job)
            else:
                self._decode(job)
        except ContextOverflowError:
            self._finish(job, "length")
        except Exception as e:                       # a bug or a provider failure: that job fails, not the server
            log.exception("generation failed")
            self._finish(job, "error", f"{type(e).__name__}: {e}")

    def _prefill_chunk(self, job: Job) -> None:
        prompt, cache = job.request.prompt, job.slot.cache
        if job.fed is None:
            job.cached = job.fed = cache.reuse(prompt)     # roll back to the longest reusable prefix
        if job.fed < len(prompt):
            stop_at = min(m for m in (job.prefix, len(prompt)) if m > job.fed)
            end = min(job.fed + self.backend.prefill_chunk, stop_at)
            self.backend.feed(cache, prompt[job.fed:end])
            job.fed = end
            if end == stop_at:
                cache.checkpoint()                          # the next request sharing this prefix comes back here
            return
        job.seq = self.backend.sequence(cache, job.request)
        job.seq.prefill()                                   # all cached: takes the cache's last logits
        if job.seq.done:
            self._finish(job, "length")

    def _decode(self, job: Job) -> None:
        event = job.seq.step()
        if event is not None:
            job.generated += 1
            self._emit(job, event)
        if job.seq.done:
            if event is not None and event.stop:
                self._finish(job, "stop")
            elif job.cancelled:
                self._finish(job, "shutdown" if job.shutdown else "cancelled")
            else:
                self._finish(job, "length")

    def _finish(self, job: Job, reason: str, error: str | None = None) -> None:
        job.finished = True
        self.counts[reason] += 1
        self.counts["completed_tokens"] += job.generated
        self._emit(job, Finished(reason, job.generated, job.cached, error))

    @staticmethod
    def _emit(job: Job, item) -> None:
        try:
            job.emit(item)
        except RuntimeError:                    # the caller's event loop is gone: nobody listens any more
            job.request.cancel.set()

    # ------------------------------------------------------- slots (under the lock)
    def _slot_free(self) -> bool:
        return len(self._active) < self.parallel

    def _queued(self) -> int:
        """Waiting jobs that will not find a free slot at the next admission."""
        return max(0, len(self._waiting) - (self.parallel - len(self._active)))

    def _admit(self) -> None:
        for job in [j for j in self._waiting if j.cancelled]:
            self._waiting.remove(job)
            job.finished = True
            self.counts["shutdown" if job.shutdown else "cancelled"] += 1
            self._emit(job, Finished("shutdown" if job.shutdown else "cancelled"))
        while self._waiting and self._slot_free():
            job = self._waiting.popleft()
            job.slot = self._take_slot(job.request.prompt)
            job.started = time.monotonic()
            self._active.append(job)

    def _take_slot(self, prompt) -> Slot:
        self._clock += 1
        free = [s for s in self._slots if not s.busy]
        best = max(free, key=lambda s: (_shared(s.cache.tokens, prompt), -s.used), default=None)
        if best is None or (_shared(best.cache.tokens, prompt) == 0 and len(self._slots) < self.parallel):
            best = Slot(self.backend.new_cache())           # keep the warm caches for prompts that share them
            self._slots.append(best)
        best.busy, best.used = True, self._clock
        return best

    def _release(self, job: Job) -> None:
        self._active.remove(job)
        job.slot.busy = False
        self._job_seconds = 0.8 * self._job_seconds + 0.2 * (time.monotonic() - job.started)

    def _retry_after(self) -> int:
        """Seconds until a queued job could start, roughly: the queue ahead times a job's mean time, per slot."""
        return max(1, min(60, math.ceil(self._job_seconds * (self._queued() + 1) / self.parallel)))

    def _enforce_drain(self) -> None:
        if self._drain_deadline is None or time.monotonic() < self._drain_deadline:
            return
        for job in [*self._waiting, *self._active]:
            job.shutdown = True
            job.request.cancel.set()


def _shared(cached: list[int], prompt) -> int:
    """Length of the common prefix of a cache's tokens and a prompt."""
    n = 0
    for a, b in zip(cached, prompt):
        if a != b:
            break
        n += 1
    return n


class Ticket:
    """The asyncio side of a job: what the worker emits arrives, in order, on an asyncio queue."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._queue: asyncio.Queue = asyncio.Queue()
        self.cancel = threading.Event()

    def push(self, item) -> None:
        """Called on the worker thread."""
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def items(self):
        """TokenEvents, then one Finished."""
        while True:
            item = await self._queue.get()
            yield item
            if isinstance(item, Finished):
                return
