"""Aggregates over seeds with bootstrap confidence intervals, as rliable reports them.

Source: Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS 2021
(arXiv 2108.13264), and its library rliable:

- the interquartile mean (IQM): the mean of the middle 50% of all runs' scores, robust to outlier runs and less
  noisy than the median;
- stratified bootstrap confidence intervals: the runs of each stratum (a task or env) are resampled with
  replacement on their own, so every resample keeps each stratum's number of runs, and the statistic is computed
  over all the resampled scores pooled;
- the probability of improvement P(X > Y): per stratum the Mann-Whitney statistic, the chance that a run of X
  scores above a run of Y (ties count one half), averaged over strata.

The resampling and the percentile interval are :func:`scipy.stats.bootstrap`'s (independent samples, one per
stratum; ``method="percentile"``).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.stats

#: the statistics :func:`aggregate` knows, by name: each maps an array to its value along ``axis``
STATISTICS: dict[str, Callable[..., np.ndarray]] = {
    "iqm": lambda x, axis=-1: scipy.stats.trim_mean(x, 0.25, axis=axis),
    "mean": lambda x, axis=-1: np.mean(x, axis=axis),
}

Scores = Sequence[Sequence[float]] | Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval ``[low, high]``, over ``n`` scores.

    ``low == high == point`` where there was nothing to resample (see :func:`aggregate`)."""

    point: float
    low: float
    high: float
    n: int = 0

    def format(self, digits: int = 3) -> str:
        """``"0.143 [0.110, 0.170]"``: the point and the interval with ``digits`` decimals."""
        return f"{self.point:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


def iqm(scores: Sequence[float] | np.ndarray) -> float:
    """The interquartile mean: the mean of the scores left once the lowest and the highest 25% are cut
    (``scipy.stats.trim_mean(x, 0.25)``; with n scores, ``int(0.25 n)`` are cut at each end)."""
    values = _check_scores(np.asarray(scores, dtype=np.float64).ravel(), "scores")
    return float(scipy.stats.trim_mean(values, 0.25))


def aggregate(scores_by_stratum: Scores, statistic: str = "iqm", confidence: float = 0.95, n_resamples: int = 2000,
              seed: int = 0) -> Interval:
    """``statistic`` ("iqm" or "mean") of all the scores pooled, with a stratified percentile bootstrap interval.

    ``scores_by_stratum`` is one sequence of scores (e.g. one per seed) per stratum (e.g. per env); a flat sequence
    of numbers is one stratum. Each stratum is resampled on its own (one sample of ``scipy.stats.bootstrap``,
    ``paired=False``) and the statistic is taken over the resamples pooled. A stratum of one score always resamples
    to itself; when every stratum has one score (a single run, or one seed per env) there is nothing to resample and
    the interval is the point itself (``low == high == point``).

    Raises ValueError for no scores, an empty stratum, a NaN or infinite score, an unknown statistic, a confidence
    outside (0, 1) or fewer than one resample.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {', '.join(STATISTICS)}, got {statistic!r}")
    strata = as_strata(scores_by_stratum)
    stat = STATISTICS[statistic]

    def pooled(samples: Sequence[np.ndarray]) -> np.ndarray:
        return stat(np.concatenate(samples, axis=-1), axis=-1)

    point = float(pooled(strata))
    return _bootstrap(strata, pooled, point, confidence, n_resamples, seed)


def probability_of_improvement(x_by_stratum: Scores, y_by_stratum: Scores, confidence: float = 0.95,
                               n_resamples: int = 2000, seed: int = 0) -> Interval:
    """rliable's probability of improvement P(X > Y), with a stratified percentile bootstrap interval.

    Per stratum k, over every pair of a score x of X and a score y of Y: P_k = mean(1[x > y] + 0.5 * 1[x = y]) (the
    Mann-Whitney U statistic over the number of pairs); P(X > Y) is the mean of P_k over strata. The interval
    resamples the 2K samples (X's strata, then Y's) independently (``paired=False``). Above 0.5 means X tends to
    score higher. ``Interval.n`` is the number of strata.

    Raises ValueError if X and Y have different numbers of strata, or for the inputs :func:`aggregate` refuses.
    """
    xs, ys = as_strata(x_by_stratum, "x"), as_strata(y_by_stratum, "y")
    if len(xs) != len(ys):
        raise ValueError(f"x has {len(xs)} strata and y {len(ys)}: each stratum (env) needs scores of both")
    k = len(xs)

    def improvement(samples: Sequence[np.ndarray]) -> np.ndarray:
        per_stratum = [_mann_whitney(x, y) for x, y in zip(samples[:k], samples[k:])]
        return np.mean(np.broadcast_arrays(*per_stratum), axis=0)

    point = float(improvement([*xs, *ys]))
    result = _bootstrap([*xs, *ys], improvement, point, confidence, n_resamples, seed)
    return Interval(result.point, result.low, result.high, k)


def as_strata(scores: Scores, name: str = "scores") -> list[np.ndarray]:
    """The scores as a list of 1-D float arrays, one per stratum; a flat sequence of numbers is one stratum.
    Raises ValueError for no scores, an empty stratum, a mix of numbers and sequences, or NaN / infinity."""
    if isinstance(scores, np.ndarray) and scores.ndim > 2:
        raise ValueError(f"{name} must be a sequence of numbers or of sequences of numbers, got {scores.ndim}-D")
    items = list(scores)
    if not items:
        raise ValueError(f"{name} is empty: need at least one score")
    flat = [np.ndim(item) == 0 for item in items]
    if all(flat):
        strata = [np.asarray(items, dtype=np.float64)]
    elif any(flat):
        raise ValueError(f"{name} mixes numbers and sequences: pass one flat sequence (one stratum) or one sequence "
                         "per stratum")
    else:
        strata = [np.asarray(item, dtype=np.float64) for item in items]
    for i, stratum in enumerate(strata):
        if stratum.ndim != 1 or stratum.size == 0:
            raise ValueError(f"stratum {i} of {name} must be a non-empty sequence of numbers, got shape "
                             f"{stratum.shape}")
        _check_scores(stratum, f"stratum {i} of {name}")
    return strata


def _check_scores(values: np.ndarray, what: str) -> np.ndarray:
    if values.size == 0:
        raise ValueError(f"{what} is empty: need at least one score")
    if not np.isfinite(values).all():
        raise ValueError(f"{what} holds NaN or an infinity: {values.tolist()}")
    return values


def _mann_whitney(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(x > y) + 0.5 P(x = y) over all pairs along the last axes (leading axes are resamples)."""
    a, b = x[..., :, None], y[..., None, :]
    return np.mean((a > b) + 0.5 * (a == b), axis=(-2, -1))


def _rng_keyword() -> str:
    """The keyword that seeds scipy.stats.bootstrap: ``rng`` from scipy 1.15, ``random_state`` before."""
    return "rng" if "rng" in inspect.signature(scipy.stats.bootstrap).parameters else "random_state"


def _bootstrap(samples: Sequence[np.ndarray], statistic: Callable[[Sequence[np.ndarray]], np.ndarray],
               point: float, confidence: float, n_resamples: int, seed: int) -> Interval:
    """The percentile interval of ``statistic`` (over the list of samples, along the last axis) with every sample
    resampled independently by scipy.stats.bootstrap. Samples of one score are held fixed (their only resample is
    themselves; scipy refuses them); with no sample left to resample the interval is the point."""
    if not 0 < confidence < 1 or isinstance(confidence, bool):
        raise ValueError(f"confidence must lie in (0, 1), e.g. 0.95, got {confidence!r}")
    if isinstance(n_resamples, bool) or int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    n = sum(s.size for s in samples)
    varying = [i for i, s in enumerate(samples) if s.size >= 2]
    if not varying:
        return Interval(point, point, point, n)

    def resampled(*drawn: np.ndarray, axis: int) -> np.ndarray:
        drawn = [np.moveaxis(d, axis, -1) for d in drawn]
        batch = drawn[0].shape[:-1]
        full = [np.broadcast_to(s, (*batch, 1)) if s.size == 1 else s for s in samples]  # one score: held fixed
        for i, d in zip(varying, drawn):
            full[i] = d
        return statistic(full)

    result = scipy.stats.bootstrap(tuple(samples[i] for i in varying), resampled, n_resamples=int(n_resamples),
                                   vectorized=True, paired=False, method="percentile", confidence_level=confidence,
                                   **{_rng_keyword(): np.random.default_rng(seed)})
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    if math.isnan(low) or math.isnan(high):  # not expected for the percentile method; never report NaN silently
        raise ValueError("the bootstrap interval came out NaN")
    return Interval(point, low, high, n)
