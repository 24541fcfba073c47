"""The scheduler's batched round on the tiny bundle, without HTTP: the decoding jobs' pending tokens go through the
engine in one graph call (ModelBackend.feed_pending -> engine.decode_batch over the slots of one kv.SlotPool), and
every job still gets exactly the tokens the same request gets alone from Model.generate (seeded sampling)."""

import threading

import numpy as np

from gptoss.runtime.generation import Request
from gptoss.runtime.sampling import SamplingParams
from gptoss.runtime.serve.scheduler import Finished, Job, ModelBackend, Scheduler

LENGTHS = (1, 6, 20, 45)            # a one-token prompt, one inside the tiny window (8), two past it
NEW = 12


def requests(vocab: int) -> list[Request]:
    rng = np.random.default_rng(3)
    params = SamplingParams(temperature=1.0, top_p=0.9)
    return [Request(tuple(rng.integers(1000, min(vocab, 199998), n).tolist()), NEW, params, seed=100 + i,
                    cancel=threading.Event()) for i, n in enumerate(LENGTHS)]


def serve_all(backend, reqs, parallel=4) -> list[tuple[list[int], Finished]]:
    """Submit every request at once to a running scheduler; each job's tokens and its Finished."""
    done = threading.Semaphore(0)
    results = [([], None) for _ in reqs]

    def emitter(i):
        def emit(item):
            if isinstance(item, Finished):
                results[i] = (results[i][0], item)
                done.release()
            else:
                results[i][0].append(item.token_id)
        return emit

    scheduler = Scheduler(backend, parallel=parallel, max_queue=len(reqs))
    for i, r in enumerate(reqs):
        scheduler.submit(Job(r, 0, emitter(i)))
    scheduler.start()
    try:
        for _ in reqs:
            assert done.acquire(timeout=60), "a job did not finish"
    finally:
        scheduler.stop()
    return results


class CountingBackend(ModelBackend):
    """The real backend; records how many sequences each batched feed carried."""

    def __init__(self, model, fail: Exception | None = None):
        super().__init__(model)
        self.batches: list[int] = []
        self.fail = fail

    def feed_pending(self, seqs) -> None:
        self.batches.append(len(seqs))
        if self.fail is not None:
            raise self.fail
        super().feed_pending(seqs)


def test_a_round_decodes_all_jobs_in_one_graph_call_and_each_gets_its_own_tokens(model, monkeypatch):
    reqs = requests(model.vocab_size)
    alone = [[e.token_id for e in model.generate(list(r.prompt), max_new_tokens=NEW, temperature=1.0, top_p=0.9,
                                                 seed=r.seed, stop_tokens=())] for r in reqs]
    graph_calls: list[int] = []
    inner = type(model.engine)._run_parts

    def spy(role, T, bind, out, run_options, batch=1):
        graph_calls.append(batch)
        return inner(model.engine, role, T, bind, out, run_options, batch)

    monkeypatch.setattr(model.engine, "_run_parts", spy)
    backend = CountingBackend(model)
    results = serve_all(backend, reqs)
    assert [tokens for tokens, _ in results] == alone
    assert all(f.reason == "length" and f.completion_tokens == NEW for _, f in results)
    assert backend.batches and max(backend.batches) == len(reqs)            # all four decoding together
    assert graph_calls.count(len(reqs)) >= NEW // 2                        # ... in one [4, 1] graph call a round


def test_a_failed_batched_step_fails_those_jobs_not_the_server(model):
    backend = CountingBackend(model, fail=RuntimeError("provider lost"))
    results = serve_all(backend, requests(model.vocab_size)[:2])
    assert [f.reason for _, f in results] == ["error", "error"]
    assert all("provider lost" in f.error for _, f in results)


def test_one_slot_never_batches(model):
    backend = CountingBackend(model)
    results = serve_all(backend, requests(model.vocab_size)[:2], parallel=1)
    assert backend.batches == [] and all(f.reason == "length" for _, f in results)
