"""Batched decode on the cpu target: B sequences advanced in one graph call (Engine.decode_batch over the slots of
a kv.SlotPool) give each sequence the logits it gets decoded alone (an ordinary SharedCache, one call each).

The oracle is the runtime's own single-sequence decode, which tests/runtime/test_runtime.py holds against the
PyTorch reference. Lengths differ per sequence: one just starting (a one-token prompt), some inside the tiny model's
sliding window (8), some far past it, so the sliding layers' window caches compact at different steps in one batch.
"""

import dataclasses

import numpy as np
import pytest

from gptoss.runtime import Model
from gptoss.runtime.generation import Request, Sequence, feed_pending, run
from gptoss.runtime.kv import SharedCache, SlotPool
from gptoss.runtime.sampling import SamplingParams
from helpers import FP32

LENGTHS = (1, 5, 8, 9, 30)          # prompt lengths: just starting, inside, at and past the window (8)
STEPS = 12
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module", params=["int8-weights", "fp32", "int8-cache"])
def model(request, tiny_bundle, tiny_hf, tmp_path_factory):
    if request.param == "int8-cache":
        from gptoss.compile.pipeline import export_bundle

        return Model.load(export_bundle(tiny_hf, tmp_path_factory.mktemp("kv") / "int8", target="cpu",
                                        kv_cache="int8"))
    return Model.load(tiny_bundle("cpu", quant=FP32 if request.param == "fp32" else None))


def prompts(vocab: int, lengths=LENGTHS, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(1000, min(vocab, 199998), n).tolist() for n in lengths]


def alone_and_pooled(model, ids, capacity: int = 8):
    """Each prompt prefilled into a cache of its own and into a slot of one pool (capacity 8: the full layers
    grow while decoding); returns (caches, slots, first greedy tokens)."""
    engine = model.engine
    pool = engine.new_pool(len(ids), capacity=capacity)
    alone = [engine.new_cache(capacity) for _ in ids]
    first = []
    for p, cache, slot in zip(ids, alone, pool.slots):
        logits = engine.prefill(cache, p)
        np.testing.assert_array_equal(engine.prefill(slot, p), logits)      # prefill of one slot: batch 1
        first.append(int(np.argmax(logits)))
    return alone, pool, first


def decode_alone(engine, caches, tokens) -> np.ndarray:
    buffer = engine.logits_buffer()
    return np.stack([engine.decode(c, t, buffer).copy() for c, t in zip(caches, tokens)])


def test_batched_decode_equals_each_sequence_alone(model, count_calls):
    engine = model.engine
    alone, pool, tokens = alone_and_pooled(model, prompts(model.vocab_size))
    calls = count_calls(engine)
    for _ in range(STEPS):
        single = decode_alone(engine, alone, tokens)
        calls.clear()
        batched = engine.decode_batch(pool.slots, tokens)
        assert calls == [len(LENGTHS)]                                   # one graph call for all of them
        np.testing.assert_allclose(batched, single, **TOL)
        assert batched.argmax(1).tolist() == single.argmax(1).tolist()
        tokens = single.argmax(1).tolist()
    assert [s.length for s in pool.slots] == [n + STEPS for n in LENGTHS]
    assert [s.tokens for s in pool.slots] == [c.tokens for c in alone]
    assert pool.rows[1] > 8 + 1                                          # the full layers grew (capacity 8)


def test_slots_in_any_order_and_with_gaps_run_as_adjacent_runs(model, count_calls):
    engine = model.engine
    alone, pool, tokens = alone_and_pooled(model, prompts(model.vocab_size))
    pick = [4, 0, 3, 1]                                     # slot 2 sits out: runs {0, 1} and {3, 4}
    calls = count_calls(engine)
    for _ in range(4):
        single = decode_alone(engine, [alone[i] for i in pick], [tokens[i] for i in pick])
        calls.clear()
        batched = engine.decode_batch([pool.slots[i] for i in pick], [tokens[i] for i in pick])
        assert sorted(calls) == [2, 2]
        np.testing.assert_allclose(batched, single, **TOL)  # rows in the order asked for
        for i, row in zip(pick, single):
            tokens[i] = int(row.argmax())
    assert pool.slots[2].length == LENGTHS[2]                # the slot left out was not touched


def test_a_slot_joins_rolls_back_and_prefills_alone_between_batched_steps(model):
    """A sequence added to a running pool (its buffers reallocated one slot larger), and a slot rolled back to a
    shared prefix and re-prefilled alone, decode on in the batch as they do alone."""
    engine = model.engine
    ids = prompts(model.vocab_size)
    alone, pool, tokens = alone_and_pooled(model, ids[:3])
    for _ in range(3):
        engine.decode_batch(pool.slots, tokens)
        tokens = decode_alone(engine, alone, tokens).argmax(1).tolist()
    late = pool.add_slot()
    alone.append(engine.new_cache(8))
    tokens.append(int(np.argmax(engine.prefill(alone[-1], ids[4]))))
    np.testing.assert_array_equal(engine.prefill(late, ids[4]), alone[-1].last_logits)
    redo = ids[1][:3] + prompts(model.vocab_size, (20,), seed=1)[0]     # slot 1: keep 3 tokens, then 20 new ones
    for cache in (alone[1], pool.slots[1]):
        engine.prefill(cache, redo[cache.reuse(redo):])
    tokens[1] = int(np.argmax(alone[1].last_logits))
    for _ in range(STEPS):
        single = decode_alone(engine, alone, tokens)
        batched = engine.decode_batch(pool.slots, tokens)
        np.testing.assert_allclose(batched, single, **TOL)
        tokens = single.argmax(1).tolist()


def test_seeded_sampling_of_sequences_stepped_together_equals_each_alone(model, count_calls):
    """feed_pending + step(): the loop a server runs; temperature sampling with each request's own seed."""
    engine, ids = model.engine, prompts(model.vocab_size)
    params = SamplingParams(temperature=1.0, top_p=0.95)
    requests = [Request(tuple(p), max_new_tokens=10, params=params, seed=7 + i) for i, p in enumerate(ids)]
    expected = [[e.token_id for e in run(Sequence(engine, model.new_cache(), r))] for r in requests]
    pool = engine.new_pool(len(requests))
    seqs = [Sequence(engine, slot, r) for slot, r in zip(pool.slots, requests)]
    for seq in seqs:
        seq.prefill()
    got = [[] for _ in seqs]
    calls = count_calls(engine)
    while not all(s.done for s in seqs):
        feed_pending(engine, seqs)
        for seq, out in zip(seqs, got):
            event = seq.step()
            if event is not None:
                out.append(event.token_id)
    assert got == expected
    assert max(calls) == len(seqs) and len(calls) == 10 - 1          # every feed one call of all five


def test_plain_caches_decode_one_by_one(model, count_calls):
    engine = model.engine
    ids = prompts(model.vocab_size, (3, 12))
    caches = [engine.new_cache(8) for _ in ids]
    twins = [engine.new_cache(8) for _ in ids]
    tokens = [int(np.argmax(engine.prefill(c, p))) for c, p in zip(caches, ids)]
    for c, p in zip(twins, ids):
        engine.prefill(c, p)
    calls = count_calls(engine)
    batched = engine.decode_batch(caches, tokens)
    assert calls == [1, 1] and all(isinstance(c, SharedCache) for c in caches)
    np.testing.assert_allclose(batched, decode_alone(engine, twins, tokens), **TOL)


def test_bad_batches_are_refused(model):
    engine = model.engine
    pool = engine.new_pool(2)
    with pytest.raises(ValueError, match="2 caches but 1 tokens"):
        engine.decode_batch(pool.slots, [1])
    with pytest.raises(ValueError, match="appears twice"):
        engine.decode_batch([pool.slots[0], pool.slots[0]], [1, 2])
    with pytest.raises(ValueError, match="concat"):
        SlotPool(dataclasses.replace(engine.kv, mode="concat", capacity=(None,) * engine.kv.num_layers))


def test_an_engine_that_cannot_batch_says_why(tiny_bundle):
    from helpers import static_target

    static = Model.load(tiny_bundle(static_target()))
    assert not static.engine.batches
    with pytest.raises(ValueError, match="batched decode needs a dynamic-shape bundle with a shared KV cache"):
        static.engine.new_pool(2)


@pytest.fixture
def count_calls(monkeypatch):
    """count_calls(engine) -> a list that records the batch size of every graph call the engine makes from now on
    (until the test ends)."""
    def start(engine) -> list[int]:
        calls: list[int] = []
        inner = type(engine)._run_parts

        def spy(role, T, bind, out, run_options, batch=1):
            calls.append(batch)
            return inner(engine, role, T, bind, out, run_options, batch)

        monkeypatch.setattr(engine, "_run_parts", spy)
        return calls

    return start
