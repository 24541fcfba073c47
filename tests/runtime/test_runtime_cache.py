"""The concat cache's bookkeeping without a model: a fake graph writes each position's absolute index as its key.

After any sequence of appends, rollbacks and checkpoints, layer i must hold exactly the positions
[N - P_i, N) with P_i = N on full layers and min(N, keep_i) on sliding ones.
"""

import numpy as np
import pytest

from gptoss.bundle import KVContract
from gptoss.runtime.kv import ConcatCache as KVCache

KEEP = (3, None, 5, None)


def spec(dtype=np.float32) -> KVContract:
    return KVContract.for_windows("concat", (4, 0, 6, 0), dtype=np.dtype(dtype).name, num_kv_heads=2, head_dim=4)


def append(cache: KVCache, tokens: list[int]) -> None:
    """What the graph does: present = past followed by the new positions (value: position, -position)."""
    n = cache.length
    for i in range(len(KEEP)):
        past_k, past_v = cache.past(i)
        present_k, present_v = cache.present(i, len(tokens))
        held = past_k.shape[2]
        present_k[:, :, :held] = past_k
        present_v[:, :, :held] = past_v
        for t in range(len(tokens)):
            present_k[:, :, held + t] = n + t
            present_v[:, :, held + t] = -(n + t)
    cache.commit(tokens)


def held_positions(cache: KVCache, layer: int) -> list[int]:
    k, v = cache.past(layer)
    assert k.flags.c_contiguous and v.flags.c_contiguous
    assert np.array_equal(k, -v)
    assert np.all(k == k[:, :1, :, :1])           # the same position in every head and lane
    return k[0, 0, :, 0].astype(int).tolist()


def expect(cache: KVCache) -> None:
    n = cache.length
    for i, keep in enumerate(KEEP):
        p = n if keep is None else min(n, keep)
        assert held_positions(cache, i) == list(range(n - p, n)), f"layer {i}"


def test_append_in_chunks_keeps_the_window():
    cache = KVCache(spec(), capacity=2)
    for chunk in ([1, 2], [3], [4, 5, 6, 7, 8, 9, 10], [11]):
        append(cache, chunk)
        expect(cache)
    assert cache.tokens == list(range(1, 12))


def test_buffers_grow_past_the_preallocated_capacity():
    cache = KVCache(spec(), capacity=4)
    before = cache.nbytes
    append(cache, list(range(30)))
    expect(cache)
    assert cache.nbytes > before


def test_rollback_while_sliding_layers_hold_everything_truncates():
    cache = KVCache(spec(), capacity=8)
    append(cache, [1, 2, 3])                # N = 3 <= every keep
    assert cache.rollback(1) == 1
    expect(cache)
    append(cache, [7, 8, 9, 10, 11])
    expect(cache)
    assert cache.tokens == [1, 7, 8, 9, 10, 11]


def test_rollback_past_dropped_positions_goes_to_a_checkpoint():
    cache = KVCache(spec(), capacity=8)
    append(cache, list(range(10)))
    cache.checkpoint()                      # at 10
    append(cache, list(range(100, 108)))    # N = 18: the sliding layers dropped 10..12
    assert cache.rollback(15) == 10         # 15 is unreachable for keep=3/5 layers; 10 is safe
    expect(cache)
    assert cache.tokens == list(range(10))
    append(cache, [5, 6])
    expect(cache)


def test_rollback_without_checkpoint_restarts_from_zero():
    cache = KVCache(spec(), capacity=8)
    append(cache, list(range(12)))
    assert cache.rollback(11) == 0
    assert cache.length == 0
    expect(cache)


def test_reuse_keeps_the_common_prefix_and_reruns_the_last_token():
    cache = KVCache(spec(), capacity=8)
    prompt = list(range(20, 32))
    append(cache, prompt)
    cache.checkpoint()
    append(cache, [1, 2, 3])
    # New prompt: the old one + different continuation -> back to the checkpoint at 12.
    assert cache.reuse(prompt + [9, 9]) == 12
    expect(cache)
    # The same prompt again: its last token must be re-run for logits, which the sliding layers
    # cannot do from 12 (they dropped position 8) -> the latest checkpoint <= 11 is 0.
    assert cache.reuse(prompt) == 0
    # ... unless the logits after it are known, now or in a checkpoint.
    append(cache, prompt)
    cache.last_logits = np.arange(4, dtype=np.float32)
    assert cache.reuse(prompt) == 12
    cache.checkpoint()
    append(cache, [1, 2, 3])
    assert cache.reuse(prompt) == 12
    assert np.array_equal(cache.last_logits, np.arange(4))
    expect(cache)


def test_reuse_of_a_short_cache_truncates_exactly():
    cache = KVCache(spec(), capacity=8)
    append(cache, [1, 2, 3])
    assert cache.reuse([1, 2, 5, 6]) == 2
    expect(cache)


def test_checkpoints_are_bounded_and_dropped_on_rollback():
    cache = KVCache(spec(), capacity=8, max_checkpoints=2)
    for start in range(0, 40, 10):
        append(cache, list(range(start, start + 10)))
        cache.checkpoint()
    assert [c.length for c in cache._checkpoints] == [30, 40]
    assert cache.rollback(35) == 30
    assert [c.length for c in cache._checkpoints] == [30]
    expect(cache)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_dtype_follows_the_manifest(dtype):
    cache = KVCache(spec(dtype), capacity=4)
    append(cache, [1, 2])
    assert cache.past(1)[0].dtype == dtype


@pytest.mark.parametrize("target", ["cpu", "portable"])
def test_fill_random_makes_a_long_context_without_prefill(tiny_bundle, target):
    from gptoss.runtime import Model
    from helpers import FP32

    model = Model.load(tiny_bundle(target, quant=FP32 if target == "cpu" else None))
    cache = model.new_cache(64)
    cache.fill_random(40, seed=3)
    kv = model.manifest.kv
    assert cache.length == 40
    assert [cache.held(i) for i in range(kv.num_layers)] == [40 if k is None else k for k in kv.keep]
    logits = model.engine.prefill(cache, [5])
    assert logits.shape == (model.vocab_size,) and np.isfinite(logits).all()
    assert cache.length == 41
    assert cache.reuse([1, 2, 3]) == 0          # random positions never count as a cached prefix
