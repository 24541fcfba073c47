"""Turn one row of logits into one token id: penalty, temperature, then top-k / top-p / min-p filters.

Order, per step:
  1. repetition penalty (CTRL / Hugging Face semantics) on the ids in `penalized`: a positive logit is
     divided by the penalty, a negative one multiplied, so a penalty > 1 always makes them less likely;
  2. temperature == 0: greedy (argmax of the penalized logits; every other setting is ignored); so is a temperature
     too small to divide by (the scaled logits would overflow float64: their limit is greedy);
  3. probabilities at the given temperature;
  4. top_k (0 = off): keep the k most probable;
  5. top_p (1 = off): keep the smallest most-probable set whose mass reaches top_p (at least one token);
  6. min_p (0 = off): keep tokens whose probability is >= min_p x the largest;
  7. draw from what is left, renormalised, with the caller's numpy Generator (so a seed fixes the result).
Ties break towards the lower token id, everywhere. Logits holding NaN or infinities raise NonFiniteLogitsError:
nothing can be sampled from them. Settings of the wrong type or out of range raise ArgumentError (a ValueError).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import ArgumentError, NonFiniteLogitsError

# The nucleus is searched among this many best tokens first; a full sort happens only when they fall short.
_NUCLEUS_PROBE = 1024


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0

    def __post_init__(self) -> None:
        for name, ok, rule in (("temperature", lambda t: 0 <= t < np.inf, "a finite number >= 0"),
                               ("top_p", lambda p: 0 < p <= 1, "a number in (0, 1]"),
                               ("min_p", lambda p: 0 <= p <= 1, "a number in [0, 1]"),
                               ("repetition_penalty", lambda r: 0 < r < np.inf, "a finite number > 0")):
            value = getattr(self, name)
            if not (_is_number(value, numbers.Real) and ok(value)):
                raise ArgumentError(f"{name} must be {rule}, got {value!r}")
        if not (_is_number(self.top_k, numbers.Integral) and self.top_k >= 0):
            raise ArgumentError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")

    @property
    def greedy(self) -> bool:
        """Temperature 0, or one whose reciprocal overflows (any logit divided by it would)."""
        return self.temperature < _SMALLEST_DIVISOR


_SMALLEST_DIVISOR = 1.0 / np.finfo(np.float64).max


def _is_number(value, kind) -> bool:
    return isinstance(value, kind) and not isinstance(value, (bool, np.bool_))


def check_finite(logits: np.ndarray, where: str | Callable[[], str] = "") -> None:
    """Raise NonFiniteLogitsError (naming `where`, a text or a function making it) unless every logit is finite.
    Two reductions per call (NaN and +-inf carry into the max and the min): cheap enough for every decode step."""
    if np.isfinite(logits.max()) and np.isfinite(logits.min()):
        return
    where = where() if callable(where) else where
    finite = np.isfinite(logits)
    nan = int(np.isnan(logits).sum())
    raise NonFiniteLogitsError(
        f"{where + ': ' if where else ''}the model returned non-finite logits ({nan} NaN, "
        f"{int(finite.size - finite.sum()) - nan} infinite, of {finite.size}): nothing can be sampled from them. "
        f"The bundle's weights or graph are damaged or hold non-finite values (`gptoss verify BUNDLE` checks "
        f"its files)")


def apply_repetition_penalty(logits: np.ndarray, penalized, penalty: float) -> np.ndarray:
    """A copy of `logits` [vocab] with the ids in `penalized` penalised (see the module docstring)."""
    out = np.array(logits, dtype=np.float32, copy=True)
    if penalty == 1.0 or penalized is None or len(penalized) == 0:
        return out
    ids = np.unique(np.asarray(penalized, dtype=np.int64))
    vals = out[ids]
    out[ids] = np.where(vals > 0, vals / penalty, vals * penalty)
    return out


def candidates(logits: np.ndarray, params: SamplingParams) -> tuple[np.ndarray, np.ndarray]:
    """The tokens steps 3-6 leave and their renormalised probabilities.

    Most probable first when top-k or top-p is on; in id order otherwise (nothing needs sorting then, and
    a full sort of a 201k vocabulary costs more than the rest of the step).
    """
    with np.errstate(over="ignore"):
        z = logits.astype(np.float64) / params.temperature
    if not np.isfinite(z.max()):                    # a temperature too small to divide by: its limit, greedy
        return np.array([int(np.argmax(logits))]), np.array([1.0])
    z -= z.max()
    probs = np.exp(z)
    probs /= probs.sum()
    vocab = probs.shape[0]

    k = params.top_k if 0 < params.top_k < vocab else vocab
    if params.top_p < 1.0:
        ids = None
        if k > _NUCLEUS_PROBE:                      # the nucleus is usually among the best few hundred
            probe = _top(probs, _NUCLEUS_PROBE)
            if probs[probe].sum() >= params.top_p:
                ids = probe
        if ids is None:
            ids = _top(probs, k)
        p = probs[ids]
        cut = int(np.searchsorted(np.cumsum(p), params.top_p * (1 - 1e-12))) + 1
        ids, p = ids[:min(cut, k)], p[:min(cut, k)]
    elif k < vocab:
        ids = _top(probs, k)
        p = probs[ids]
    else:
        ids, p = np.arange(vocab), probs
    if params.min_p > 0.0:
        keep = p >= params.min_p * p.max()
        ids, p = ids[keep], p[keep]
    return ids, p / p.sum()


def sample(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator, penalized=None,
           where: str | Callable[[], str] = "") -> int:
    """One token id from `logits` [vocab] (see the module docstring for the order of operations); `where` names
    the logits in the error non-finite ones raise."""
    check_finite(logits, where)
    z = apply_repetition_penalty(logits, penalized, params.repetition_penalty)
    if params.greedy:
        return int(np.argmax(z))
    ids, p = candidates(z, params)
    r = rng.random()
    i = int(np.searchsorted(np.cumsum(p), r, side="right"))
    return int(ids[min(i, len(ids) - 1)])


def _top(probs: np.ndarray, k: int) -> np.ndarray:
    """Ids of the k largest probabilities, largest first, ties to the lower id."""
    if k >= probs.shape[0]:
        return np.argsort(-probs, kind="stable")
    part = np.argpartition(-probs, k - 1)[:k]
    # argpartition may pick either of two tokens tied at the boundary; include all ties, then cut.
    boundary = probs[part].min()
    part = np.union1d(part, np.flatnonzero(probs == boundary)) if np.count_nonzero(probs == boundary) > 1 else part
    order = np.lexsort((part, -probs[part]))
    return part[order][:k]
