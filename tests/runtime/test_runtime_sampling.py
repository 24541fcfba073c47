"""The sampler's semantics: penalty, greedy, top-k, top-p, min-p, seeded determinism."""

import numpy as np
import pytest

from gptoss.runtime.sampling import SamplingParams, apply_repetition_penalty, candidates, sample


def logits_for(probs) -> np.ndarray:
    return np.log(np.asarray(probs, dtype=np.float64)).astype(np.float32)


PROBS = [0.05, 0.5, 0.15, 0.3]          # ranks: 1, 3, 2, 0


def support(params: SamplingParams, probs=PROBS) -> set[int]:
    ids, p = candidates(logits_for(probs), params)
    assert np.isclose(p.sum(), 1.0)
    if params.top_k or params.top_p < 1:
        assert np.all(np.diff(p) <= 1e-12)   # most probable first
    return set(ids.tolist())


def test_greedy_is_argmax_and_ignores_filters():
    z = np.array([0.1, 3.0, 2.9, -1.0], np.float32)
    rng = np.random.default_rng(0)
    assert sample(z, SamplingParams(temperature=0, top_k=3, top_p=0.1), rng) == 1


def test_top_k():
    assert support(SamplingParams(top_k=1)) == {1}
    assert support(SamplingParams(top_k=2)) == {1, 3}
    assert support(SamplingParams(top_k=0)) == {0, 1, 2, 3}


def test_top_p_keeps_the_smallest_set_reaching_p():
    assert support(SamplingParams(top_p=0.5)) == {1}
    assert support(SamplingParams(top_p=0.79)) == {1, 3}
    assert support(SamplingParams(top_p=0.81)) == {1, 3, 2}
    assert support(SamplingParams(top_p=0.01)) == {1}


def test_min_p_is_relative_to_the_top_token():
    assert support(SamplingParams(min_p=0.5)) == {1, 3}        # 0.3 >= 0.25, 0.15 < 0.25
    assert support(SamplingParams(min_p=0.29)) == {1, 3, 2}    # 0.15 >= 0.145
    assert support(SamplingParams(min_p=1.0)) == {1}


def test_temperature_reshapes_before_filtering():
    # At a high temperature the distribution flattens: top_p=0.5 then needs two tokens.
    assert support(SamplingParams(temperature=10.0, top_p=0.5)) == {1, 3}


def test_repetition_penalty_semantics():
    z = np.array([2.0, -2.0, 1.0, 0.5], np.float32)
    out = apply_repetition_penalty(z, [0, 1, 1], 2.0)
    assert out.tolist() == [1.0, -4.0, 1.0, 0.5]
    assert z.tolist() == [2.0, -2.0, 1.0, 0.5]                 # the input is not modified
    # Greedy with a penalty avoids the repeated token.
    rng = np.random.default_rng(0)
    assert sample(np.array([2.0, 1.5], np.float32), SamplingParams(temperature=0, repetition_penalty=2.0), rng,
                  penalized=[0]) == 1


def test_samples_follow_the_distribution_and_stay_in_support():
    rng = np.random.default_rng(0)
    params = SamplingParams(top_k=3)
    draws = [sample(logits_for(PROBS), params, rng) for _ in range(4000)]
    counts = np.bincount(draws, minlength=4) / len(draws)
    assert counts[0] == 0
    expected = np.array([0, 0.5, 0.15, 0.3]) / 0.95
    assert np.allclose(counts, expected, atol=0.03)


def test_seeded_draws_are_deterministic():
    z = np.random.default_rng(1).normal(size=5000).astype(np.float32)
    params = SamplingParams(temperature=0.8, top_p=0.9)

    def draws(seed):
        rng = np.random.default_rng(seed)
        return [sample(z, params, rng) for _ in range(50)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_top_k_then_top_p():
    assert support(SamplingParams(top_k=3, top_p=0.79)) == {1, 3}
    assert support(SamplingParams(top_k=2, top_p=0.99)) == {1, 3}


def test_nucleus_probe_matches_a_full_sort():
    rng = np.random.default_rng(3)
    for scale in (0.1, 5.0):             # flat (probe falls short) and peaked (probe suffices)
        z = (rng.normal(size=201088) * scale).astype(np.float32)
        params = SamplingParams(top_p=0.9)
        ids, p = candidates(z, params)
        probs = np.exp(z.astype(np.float64) - z.max())
        probs /= probs.sum()
        order = np.argsort(-probs, kind="stable")
        n = int(np.searchsorted(np.cumsum(probs[order]), 0.9 * (1 - 1e-12))) + 1
        assert set(ids.tolist()) == set(order[:n].tolist())


@pytest.mark.parametrize("kwargs", [dict(temperature=-1), dict(top_k=-1), dict(top_p=0), dict(top_p=1.5),
                                    dict(min_p=2), dict(repetition_penalty=0)])
def test_invalid_parameters_are_errors(kwargs):
    with pytest.raises(ValueError):
        SamplingParams(**kwargs)
