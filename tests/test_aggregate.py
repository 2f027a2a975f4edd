"""Aggregates over seeds: IQM, stratified bootstrap intervals and the probability of improvement."""

import numpy as np
import pytest
import scipy.stats

from cadence.evaluation.aggregate import Interval, aggregate, as_strata, iqm, probability_of_improvement

N = 300  # resamples: enough for a stable test, fast


def _direct(data, statistic, seed=0, n=N, confidence=0.95):
    """scipy.stats.bootstrap called as rliable's stratified bootstrap would be."""
    res = scipy.stats.bootstrap(data, statistic, n_resamples=n, vectorized=True, paired=False, method="percentile",
                                confidence_level=confidence, rng=np.random.default_rng(seed))
    return res.confidence_interval.low, res.confidence_interval.high


# --- IQM ------------------------------------------------------------------------------------------------------------

def test_iqm_by_hand():
    assert iqm(range(1, 9)) == pytest.approx(4.5)  # cut 1, 2 and 7, 8: mean of 3..6
    assert iqm([1, 2, 3, 100]) == pytest.approx(2.5)  # cut one at each end: mean of 2, 3
    assert iqm([5.0, 1.0, 9.0]) == pytest.approx(5.0)  # int(0.75) = 0 cut: the plain mean
    assert iqm([1, 2, 3, 4, 5, 6, 7, 1000]) == pytest.approx(4.5)  # the outlier is cut
    assert iqm([7.0]) == 7.0


# --- aggregate ------------------------------------------------------------------------------------------------------

def test_one_stratum_matches_scipy_bootstrap():
    x = np.array([0.1, 0.4, 0.35, 0.8, 0.6, 0.2, 0.55])
    got = aggregate(x, "iqm", n_resamples=N, seed=3)
    low, high = _direct((x,), lambda s, axis: scipy.stats.trim_mean(s, 0.25, axis=axis), seed=3)
    assert got.point == pytest.approx(scipy.stats.trim_mean(x, 0.25))
    assert (got.low, got.high) == pytest.approx((low, high))
    assert got.low <= got.point <= got.high and got.n == 7
    assert aggregate([list(x)], "iqm", n_resamples=N, seed=3) == got  # one stratum, nested or flat


def test_two_strata_match_scipy_bootstrap():
    a, b = np.array([1.0, 2.0, 4.0, 3.0]), np.array([10.0, 12.0, 11.0])
    got = aggregate([a, b], "mean", confidence=0.9, n_resamples=N, seed=1)
    low, high = _direct((a, b), lambda u, v, axis: np.mean(np.concatenate([u, v], axis=axis), axis=axis), seed=1,
                        confidence=0.9)
    assert got.point == pytest.approx(np.mean([*a, *b]))
    assert (got.low, got.high) == pytest.approx((low, high))


def test_stratified_differs_from_pooled():
    # each env's seeds agree, the envs differ: resampling within envs keeps half of each, pooling does not
    strata = [[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    stratified = aggregate(strata, "mean", n_resamples=N)
    pooled = aggregate([0.0] * 4 + [1.0] * 4, "mean", n_resamples=N)
    assert stratified == Interval(0.5, 0.5, 0.5, 8)
    assert pooled.point == 0.5 and pooled.high - pooled.low > 0.3


def test_single_scores_give_a_degenerate_interval():
    assert aggregate([3.5]) == Interval(3.5, 3.5, 3.5, 1)
    assert aggregate([[1.0], [2.0], [6.0]], "mean") == Interval(3.0, 3.0, 3.0, 3)  # one seed per env


def test_a_one_score_stratum_is_held_fixed():
    got = aggregate([[1.0, 2.0, 3.0], [10.0]], "mean", n_resamples=N)
    assert got.point == pytest.approx(4.0)
    # stratum 0's resampled mean lies in [1, 3]: the pooled mean in [(3 + 10)/4, (9 + 10)/4]
    assert 3.25 <= got.low <= got.point <= got.high <= 4.75


def test_same_seed_same_interval():
    x = [[0.2, 0.5, 0.1], [0.9, 0.7, 0.75]]
    assert aggregate(x, n_resamples=N, seed=5) == aggregate(x, n_resamples=N, seed=5)


def test_interval_format():
    assert Interval(0.1432, 0.11, 0.17, 3).format() == "0.143 [0.110, 0.170]"
    assert Interval(1234.56, 1000, 1500).format(1) == "1234.6 [1000.0, 1500.0]"


@pytest.mark.parametrize("scores, kwargs, match", [
    ([], {}, "empty"),
    ([[1.0, 2.0], []], {}, "non-empty"),
    ([1.0, float("nan")], {}, "NaN"),
    ([[1.0, float("inf")]], {}, "NaN or an infinity"),
    ([1.0, [2.0, 3.0]], {}, "mixes"),
    ([1.0, 2.0], {"statistic": "median"}, "statistic must be one of iqm, mean"),
    ([1.0, 2.0], {"confidence": 95}, r"confidence must lie in \(0, 1\)"),
    ([1.0, 2.0], {"confidence": 0.0}, "confidence"),
    ([1.0, 2.0], {"n_resamples": 0}, "n_resamples"),
])
def test_bad_input(scores, kwargs, match):
    with pytest.raises(ValueError, match=match):
        aggregate(scores, **kwargs)


def test_iqm_refuses_nan_and_empty():
    with pytest.raises(ValueError, match="empty"):
        iqm([])
    with pytest.raises(ValueError, match="NaN"):
        iqm([1.0, np.nan])


def test_as_strata_shapes():
    assert [s.tolist() for s in as_strata(np.array([[1, 2], [3, 4]]))] == [[1.0, 2.0], [3.0, 4.0]]
    assert [s.tolist() for s in as_strata((1, 2, 3))] == [[1.0, 2.0, 3.0]]


# --- probability of improvement -------------------------------------------------------------------------------------

def test_probability_of_improvement_by_hand():
    # pairs (3,1) (3,4) (4,1) (4,4): 1 + 0 + 1 + 0.5 over 4
    got = probability_of_improvement([[3.0, 4.0]], [[1.0, 4.0]], n_resamples=N)
    assert got.point == pytest.approx(0.625)
    assert 0.0 <= got.low <= got.point <= got.high <= 1.0 and got.n == 1
    assert probability_of_improvement([3.0, 4.0], [1.0, 4.0], n_resamples=N).point == pytest.approx(0.625)


def test_probability_of_improvement_averages_strata():
    # stratum 0: 0.625 as above; stratum 1: 5 beats 1 and 2 -> 1.0; mean 0.8125
    got = probability_of_improvement([[3.0, 4.0], [5.0, 6.0]], [[1.0, 4.0], [1.0, 2.0]], n_resamples=N)
    assert got.point == pytest.approx(0.8125) and got.n == 2


def test_dominating_method_has_probability_one():
    got = probability_of_improvement([[10.0, 11.0, 12.0], [5.0, 6.0]], [[1.0, 2.0, 3.0], [0.0, 1.0]], n_resamples=N)
    assert got == Interval(1.0, 1.0, 1.0, 2)
    reverse = probability_of_improvement([[1.0, 2.0, 3.0]], [[10.0, 11.0, 12.0]], n_resamples=N)
    assert reverse.point == 0.0 and reverse.high == 0.0


def test_probability_of_improvement_matches_scipy_bootstrap():
    x, y = np.array([3.0, 4.0, 2.0]), np.array([1.0, 4.0, 2.5, 3.5])

    def mann_whitney(u, v, axis):
        u, v = np.moveaxis(u, axis, -1)[..., :, None], np.moveaxis(v, axis, -1)[..., None, :]
        return np.mean((u > v) + 0.5 * (u == v), axis=(-2, -1))

    got = probability_of_improvement([x], [y], n_resamples=N, seed=2)
    assert (got.low, got.high) == pytest.approx(_direct((x, y), mann_whitney, seed=2))


def test_probability_of_improvement_needs_matching_strata():
    with pytest.raises(ValueError, match="x has 2 strata and y 1"):
        probability_of_improvement([[1.0], [2.0]], [[1.0, 2.0]])
    with pytest.raises(ValueError, match="NaN"):
        probability_of_improvement([[1.0, np.nan]], [[1.0, 2.0]])
