"""Decode by replaying a captured device graph (CUDA graphs, WebGPU graph capture).

A capturable bundle (manifest `target.graph_capture`: the provider option that turns capture on) takes its
attention lengths as inputs, so its decode step holds no CPU node. `Model.load(graph_capture=True)` sets that
option; the engine then

- runs every call but a one-token decode with `gpu_graph_id = -1` (prefill chunks change shape: never captured);
- decodes through a `CapturedStep` when the cache lives on the device: the step's inputs (token, position,
  logits_from, seqlens_k, total_sequence_length) and its logits are device buffers made once and bound once, with
  the cache's own buffers, which never move (a device cache holds the whole context from the start). The first
  step records the graph; later steps write their inputs in place and replay it. total_sequence_length is the
  cache's row count, the same on every replay: the rows past seqlens_k are masked by the attention op.

A captured graph pins its binding, hence one cache: each cache that decodes gets its own graph id, up to
`MAX_GRAPHS` (a server's concurrent conversations each replay their own); one more releases the least recently
used, and a cache that is garbage collected releases its graph (and, with it, the device memory its binding holds).
Only the logits row crosses to the host.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import numpy as np
import onnxruntime as ort

from gptoss.bundle import names

from .kv.storage import DeviceBuffer

MAX_GRAPHS = 8                 # recorded graphs kept at once (one per cache)
SKIP = -1                      # ONNX Runtime's "run without capture or replay"
RUN_OPTION = "gpu_graph_id"


def without_capture(run_options: ort.RunOptions | None) -> ort.RunOptions:
    """`run_options` (a fresh one if None) marked to run outside any captured graph."""
    run_options = run_options if run_options is not None else ort.RunOptions()
    run_options.add_run_config_entry(RUN_OPTION, str(SKIP))
    return run_options


class CapturedStep:
    """One-token decode on `cache` (a device SharedCache) through graph `part` (a one-part role), recorded as graph
    `graph_id` on the first step and replayed on the later ones. It holds the cache's buffers (bound), not the cache."""

    def __init__(self, part, cache, graph_id: int, device: str, device_id: int, vocab: int, logits_dtype: np.dtype):
        self.session, self.graph_id = part.session, graph_id
        # the growing (full-attention) layers' rows: fixed across replays, and what total_sequence_length says; a
        # step needs strictly more rows than the sequence (as SharedCache.bind). Window caches keep their own size.
        rows = min(cache.buffers(i)[0].shape[2] for i in part.layers if cache.spec.capacity[i] is None)
        self.rows = rows

        def buffer(shape, dtype, value=0):
            buf = DeviceBuffer(shape, dtype, device, device_id)        # zeros
            if value:
                buf.write(np.full(shape, value, dtype))
            return buf

        self.inputs = {names.INPUT_IDS: buffer((1, 1), np.int64), names.POSITION_IDS: buffer((1, 1), np.int64),
                       names.LOGITS_FROM: buffer((1,), np.int64), names.SEQLENS_K: buffer((1,), np.int32),
                       names.TOTAL_SEQUENCE_LENGTH: buffer((), np.int32, rows)}
        self.logits = buffer((1, 1, vocab), logits_dtype)
        self.binding = self.session.io_binding()
        for name, buf in self.inputs.items():
            if part.takes(name):
                buf.bind_input(self.binding, name)
        cache.bind(self.binding, 1, part.layers)
        self.logits.bind_output(self.binding, names.LOGITS)
        self.run_options = ort.RunOptions()
        self.run_options.add_run_config_entry(RUN_OPTION, str(graph_id))

    def step(self, cache, token: int) -> np.ndarray:
        """Append `token` to `cache` (the one this step was made for); its logits, float32 [vocab]."""
        position = cache.length
        if position + 2 > self.rows:    # the cache would have to grow, i.e. move: the recorded graph cannot follow
            raise ValueError(f"graph capture: the cache holds {self.rows} rows, {position + 1} positions would "
                             f"outgrow it; make the cache with Model.new_cache() (a device cache takes the whole "
                             f"context up front)")
        self.inputs[names.INPUT_IDS].write(np.array([[token]], np.int64))
        self.inputs[names.POSITION_IDS].write(np.array([[position]], np.int64))
        self.inputs[names.SEQLENS_K].write(np.array([position], np.int32))
        self.session.run_with_iobinding(self.binding, self.run_options)
        cache.commit([token])
        return self.logits.read()[0, -1].astype(np.float32, copy=False)

    def release(self) -> None:
        self.session.release_captured_graph(self.graph_id)


class Capture:
    """The engine's captured decode: a CapturedStep per cache (at most `max_graphs`, least recently used released
    first); `recorded` counts the graphs made so far."""

    def __init__(self, part, placement, vocab: int, logits_dtype: np.dtype, max_graphs: int = MAX_GRAPHS):
        self.part, self.placement, self.vocab, self.logits_dtype = part, placement, vocab, logits_dtype
        self.max_graphs, self.recorded = max_graphs, 0
        self.steps: OrderedDict[int, CapturedStep] = OrderedDict()      # id(cache) -> its step, oldest use first
        self.lock = threading.RLock()

    def decode(self, cache, token: int) -> np.ndarray:
        with self.lock:
            step = self.steps.get(id(cache))
            if step is None:
                step = self._record(cache)
            self.steps.move_to_end(id(cache))
            return step.step(cache, token)

    def _record(self, cache) -> CapturedStep:
        if len(self.steps) >= self.max_graphs:
            self.forget(next(iter(self.steps)))
        free = sorted(set(range(1, self.max_graphs + 1)) - {s.graph_id for s in self.steps.values()})
        step = CapturedStep(self.part, cache, free[0], self.placement.device, self.placement.device_id, self.vocab,
                            self.logits_dtype)
        self.steps[id(cache)] = step
        self.recorded += 1
        weakref.finalize(cache, self.forget, id(cache), step).atexit = False
        return step

    def forget(self, key: int, step: CapturedStep | None = None) -> None:
        """Release the graph of the cache whose id() is `key` (if `step` is given: only if it is still that one)."""
        with self.lock:
            if key in self.steps and (step is None or self.steps[key] is step):
                self.steps.pop(key).release()
