"""Hand-computed statistics: variance components and ICC, empirical-Bayes shrinkage, funnel limits,
correlations with Fisher-z intervals, dependent-correlation differences."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from scipy.stats import rankdata

from marts.stats import (
    adjusted_difference,
    average_ranks,
    bootstrap_icc,
    cluster_bootstrap,
    cluster_bootstrap_arrays,
    correlate,
    eb_shrink,
    fast_pearson,
    fisher_ci,
    funnel_limits,
    mean_ci,
    mean_difference_ci,
    overdispersed_funnel_limits,
    partial_correlation,
    pearson_r,
    spearman_rho,
    variance_components,
    winsorised_tau2,
    z_for,
    zou_difference,
)
from marts.therapists import funnel_position, period_of


def test_variance_components_balanced():
    # A = 1,2,3 (mean 2), B = 4,5,6 (mean 5); grand 3.5
    # MSB = 3 * (1.5^2 + 1.5^2) / 1 = 13.5; MSW = (2 + 2) / 4 = 1; n0 = 3
    # tau2 = (13.5 - 1) / 3 = 4.1667; ICC = 4.1667 / 5.1667
    vc = variance_components({"A": [1, 2, 3], "B": [4, 5, 6]})
    assert vc is not None
    assert (vc.grand_mean, vc.sigma2, vc.n0, vc.groups, vc.observations) == (3.5, 1.0, 3.0, 2, 6)
    assert vc.tau2 == pytest.approx(12.5 / 3)
    assert vc.icc == pytest.approx((12.5 / 3) / (12.5 / 3 + 1))


def test_variance_components_unbalanced_uses_n0():
    # A = 1,3 (mean 2), B = 2,4,6 (mean 4); N = 5, grand = 16 / 5 = 3.2
    # SSB = 2 * 1.2^2 + 3 * 0.8^2 = 4.8 = MSB; SSW = 2 + 8 = 10, MSW = 10 / 3
    # n0 = (5 - (4 + 9) / 5) / 1 = 2.4; tau2 = (4.8 - 10/3) / 2.4 = 0.6111
    vc = variance_components({"A": [1, 3], "B": [2, 4, 6]})
    assert vc is not None
    assert vc.grand_mean == pytest.approx(3.2)
    assert vc.n0 == pytest.approx(2.4)
    assert vc.sigma2 == pytest.approx(10 / 3)
    assert vc.tau2 == pytest.approx((4.8 - 10 / 3) / 2.4)
    assert vc.icc == pytest.approx(0.6111111 / (0.6111111 + 3.3333333), abs=1e-6)


def test_variance_components_truncates_negative_tau2_and_handles_degenerate_input():
    # group means equal: MSB = 0 < MSW, so tau2 = 0 and ICC = 0
    vc = variance_components({"A": [1, 3], "B": [3, 1]})
    assert vc is not None and vc.tau2 == 0.0 and vc.icc == 0.0
    assert variance_components({}) is None
    one = variance_components({"A": [1, 2, 3]})
    assert one is not None and one.icc is None and one.grand_mean == 2.0


def test_empirical_bayes_shrinkage_and_interval():
    # w = 0.09 / (0.09 + 0.36 / 4) = 0.5; estimate = 3.5 + 0.5 * 0.5 = 3.75
    # posterior variance = w * sigma2 / n = 0.045; half-width = 1.959964 * sqrt(0.045)
    s = eb_shrink(4.0, 4, 3.5, 0.09, 0.36)
    assert s.weight == pytest.approx(0.5)
    assert s.estimate == pytest.approx(3.75)
    half = 1.959964 * math.sqrt(0.045)
    assert (s.ci_lower, s.ci_upper) == (
        pytest.approx(3.75 - half, abs=1e-5),
        pytest.approx(3.75 + half, abs=1e-5),
    )
    # more patients, less shrinkage
    assert eb_shrink(4.0, 36, 3.5, 0.09, 0.36).weight == pytest.approx(0.09 / (0.09 + 0.01))
    # no between-therapist variance: everyone is the grand mean
    assert eb_shrink(4.0, 4, 3.5, 0.0, 0.36).estimate == 3.5
    with pytest.raises(ValueError):
        eb_shrink(4.0, 0, 3.5, 0.1, 0.3)


def test_funnel_limits_at_two_z_values():
    # grand 3.5, sigma 0.6, n 9: sigma / sqrt(n) = 0.2
    assert funnel_limits(3.5, 0.6, 9, 1.96) == (pytest.approx(3.108), pytest.approx(3.892))
    assert funnel_limits(3.5, 0.6, 9, 3.09) == (pytest.approx(2.882), pytest.approx(4.118))
    inner, outer = (3.108, 3.892), (2.882, 4.118)
    assert [funnel_position(m, inner, outer) for m in (4.2, 4.0, 3.5, 3.0, 2.8)] == [
        "above_outer",
        "above_inner",
        "within",
        "below_inner",
        "below_outer",
    ]


def test_winsorised_tau2_by_hand():
    # sigma2 1, n 4 each: se 0.5; means -1, -0.5, 0.5, 1 around 0 -> z = -2, -1, 1, 2.
    # 10% / 90% quantiles (linear): -2 + 0.3 * 1 = -1.7 and 1 + 0.7 * 1 = 1.7 -> z_w = -1.7, -1, 1, 1.7
    # phi = (2.89 + 1 + 1 + 2.89) / 4 = 1.945; w = 4 each: sum w - sum w^2 / sum w = 16 - 64 / 16 = 12
    # tau2 = (4 * 1.945 - 3) / 12 = 4.78 / 12
    means, ns = [-1.0, -0.5, 0.5, 1.0], [4, 4, 4, 4]
    assert winsorised_tau2(means, ns, 0.0, 1.0, 0.1) == pytest.approx(4.78 / 12)
    # without Winsorising: phi = (4 + 1 + 1 + 4) / 4 = 2.5 -> tau2 = (10 - 3) / 12
    assert winsorised_tau2(means, ns, 0.0, 1.0, 0.0) == pytest.approx(7 / 12)
    # means closer together than chance allows: no overdispersion, tau2 truncated at 0
    assert winsorised_tau2([-0.1, 0.0, 0.1], [4, 4, 4], 0.0, 1.0) == 0.0
    # one unit, or no within-unit variance: nothing to estimate
    assert winsorised_tau2([1.0], [4], 0.0, 1.0) == 0.0
    assert winsorised_tau2(means, ns, 0.0, 0.0) == 0.0
    with pytest.raises(ValueError):
        winsorised_tau2([1.0, 2.0], [4], 0.0, 1.0)


def test_overdispersed_funnel_limits_by_hand():
    # sigma2 1, n 4, tau2 4.78 / 12: sqrt(0.25 + 0.398333) = 0.805191
    half = 0.805191
    lower, upper = overdispersed_funnel_limits(0.0, 1.0, 4, 4.78 / 12, 1.96)
    assert (lower, upper) == (pytest.approx(-1.96 * half, abs=1e-5), pytest.approx(1.96 * half, abs=1e-5))
    # tau2 = 0: the plain limits grand -+ z sigma / sqrt(n)
    assert overdispersed_funnel_limits(3.5, 0.36, 9, 0.0, 3.09) == funnel_limits(3.5, 0.6, 9, 3.09)
    # tau2 keeps the limits apart however large n grows (sigma2 / n -> 0)
    assert overdispersed_funnel_limits(0.0, 1.0, 10**9, 0.04, 1.96)[1] == pytest.approx(0.392, abs=1e-6)
    with pytest.raises(ValueError):
        overdispersed_funnel_limits(0.0, 1.0, 0, 0.1, 1.96)


def test_pearson_and_spearman_by_hand():
    x, y = [1, 2, 3, 4, 5], [2, 4, 5, 4, 5]
    # dx = -2..2, dy = -2, 0, 1, 0, 1: sxy = 6, sxx = 10, syy = 6 -> r = 6 / sqrt(60)
    assert pearson_r(x, y) == pytest.approx(6 / math.sqrt(60))
    # ranks of y with ties: 1, 2.5, 4.5, 2.5, 4.5 -> rho = pearson of ranks
    assert spearman_rho(x, y) == pytest.approx(pearson_r(x, [1, 2.5, 4.5, 2.5, 4.5]))
    assert spearman_rho([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert pearson_r([1, 1, 1], [1, 2, 3]) is None
    assert pearson_r([1, 2], [1, 2]) is None


def test_fisher_interval_by_hand():
    # r = 0.5, n = 28: atanh = 0.549306, se = 1/5 -> tanh(0.549306 -+ 0.391993)
    lo, hi = fisher_ci(0.5, 28)
    assert (lo, hi) == (
        pytest.approx(math.tanh(0.157313), abs=1e-5),
        pytest.approx(math.tanh(0.941299), abs=1e-5),
    )
    assert fisher_ci(0.5, 3) is None
    c = correlate([1, 2, 3, 4, 5, 6], [1, 3, 2, 5, 4, 6], "spearman")
    # Spearman's SE uses the 1.06 factor: wider than Pearson's interval for the same r
    lo_p, hi_p = fisher_ci(c.estimate, 6)
    assert c.ci_lower < lo_p and c.ci_upper > hi_p
    assert c.n == 6 and 0 < c.p_value < 1
    assert z_for(0.95) == pytest.approx(1.959964, abs=1e-6)


def test_zou_difference_of_dependent_correlations():
    d = zou_difference(0.7, 0.2, 0.35, 100)
    assert d is not None
    diff, lo, hi = d
    assert diff == pytest.approx(0.5)
    assert lo > 0 and hi > diff
    # swapping the predictors mirrors the interval
    m = zou_difference(0.2, 0.7, 0.35, 100)
    assert m is not None
    assert (m[0], m[1], m[2]) == (pytest.approx(-0.5), pytest.approx(-hi), pytest.approx(-lo))
    # the more the predictors correlate, the narrower the interval of their difference
    wide = zou_difference(0.5, 0.3, 0.0, 100)
    narrow = zou_difference(0.5, 0.3, 0.8, 100)
    assert wide is not None and narrow is not None
    assert narrow[2] - narrow[1] < wide[2] - wide[1]
    assert zou_difference(0.5, 0.3, 0.2, 3) is None


def test_bootstrap_icc_is_deterministic_and_brackets_a_clear_effect():
    groups = {f"t{g}": [g + 0.1 * k for k in range(5)] for g in range(6)}
    a = bootstrap_icc(groups, 200, seed=7)
    b = bootstrap_icc(groups, 200, seed=7)
    assert a == b and a is not None
    assert 0.8 < a[0] <= a[1] <= 1.0
    assert bootstrap_icc({"a": [1.0], "b": [2.0]}, 100, seed=1) is None


def test_mean_difference_interval():
    d = mean_difference_ci([1, 2, 3], [0, 0, 3])
    assert d is not None
    # means 2 and 1; variances 1 and 3 -> se = sqrt(1/3 + 3/3)
    assert d[0] == pytest.approx(1.0)
    assert d[2] - d[0] == pytest.approx(1.959964 * math.sqrt(4 / 3), abs=1e-5)
    assert mean_difference_ci([1], [2, 3]) is None


@pytest.mark.parametrize(
    ("kind", "day", "expected"),
    [
        ("year", "2026-05-17", ("2026-01-01", "2026-12-31")),
        ("quarter", "2026-05-17", ("2026-04-01", "2026-06-30")),
        ("quarter", "2026-11-02", ("2026-10-01", "2026-12-31")),
        ("month", "2026-02-10", ("2026-02-01", "2026-02-28")),
        ("month", "2026-12-10", ("2026-12-01", "2026-12-31")),
        ("all", "2026-02-10", ("2026-01-05", "2026-10-30")),
    ],
)
def test_therapist_periods(kind, day, expected):
    from datetime import date

    span = (date(2026, 1, 5), date(2026, 10, 30))
    got = period_of(kind, date.fromisoformat(day), span)
    assert (got[0].isoformat(), got[1].isoformat()) == expected


@pytest.mark.parametrize("seed", range(12))
def test_correlations_and_intervals_agree_with_scipy_on_random_data(seed):
    """The project's functions against scipy (and pandas/numpy) on random data, ties included."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 200))
    if seed % 2:  # integer ratings 1-5: many ties, as questionnaire scores have
        x, y = rng.integers(1, 6, n).astype(float), rng.integers(0, 11, n).astype(float)
    else:
        x = rng.normal(3.5, 0.7, n)
        y = 0.4 * x + rng.normal(0, 1, n)
    xs, ys = list(x), list(y)
    r = pearson_r(xs, ys)
    assert r == pytest.approx(scipy_stats.pearsonr(x, y).statistic, abs=1e-12)
    assert r == pytest.approx(float(np.corrcoef(x, y)[0, 1]), abs=1e-12)
    rho = spearman_rho(xs, ys)
    assert rho == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)
    # Spearman = Pearson of average ranks, as rankdata and pandas rank ties
    assert rho == pytest.approx(pearson_r(list(rankdata(x)), list(rankdata(y))), abs=1e-12)
    assert rho == pytest.approx(pd.Series(x).corr(pd.Series(y), method="spearman"), abs=1e-12)
    # the Fisher-z interval is scipy's interval for Pearson's r
    scipy_ci = scipy_stats.pearsonr(x, y).confidence_interval(0.95)
    assert fisher_ci(r, n) == pytest.approx((scipy_ci.low, scipy_ci.high), abs=1e-9)
    c = correlate(xs, ys, "pearson")
    assert (c.ci_lower, c.ci_upper) == pytest.approx((scipy_ci.low, scipy_ci.high), abs=1e-9)
    # the mean's normal interval
    m, lo, hi = mean_ci(xs)
    scipy_lo, scipy_hi = scipy_stats.norm.interval(0.95, loc=x.mean(), scale=scipy_stats.sem(x))
    assert (m, lo, hi) == pytest.approx((x.mean(), scipy_lo, scipy_hi), abs=1e-9)
    for level in (0.8, 0.95, 0.99):
        assert z_for(level) == pytest.approx(scipy_stats.norm.ppf(0.5 + level / 2), abs=1e-12)


def test_correlations_of_constant_or_short_input_are_undefined():
    assert pearson_r([2.0] * 10, list(range(10))) is None
    assert spearman_rho(list(range(10)), [0.1 * 3] * 10) is None
    assert spearman_rho([1, 2], [2, 1]) is None
    with pytest.raises(ValueError, match="differ in length"):
        spearman_rho([1, 2, 3], [1, 2])


def test_cluster_bootstrap_resamples_whole_clusters_and_is_deterministic():
    import pandas as pd

    from marts.stats import cluster_bootstrap

    # 6 therapists, each with 5 identical episodes: within a cluster rows carry no extra information,
    # so the clustered interval must be as wide as one over the 6 cluster means, not 30 rows
    rows = [{"t": t, "x": float(t)} for t in range(6) for _ in range(5)]
    frame = pd.DataFrame(rows)

    def mean_x(f: pd.DataFrame) -> float:
        return float(f["x"].mean())

    a = cluster_bootstrap(frame, "t", mean_x, 400, seed=3)
    b = cluster_bootstrap(frame, "t", mean_x, 400, seed=3)
    assert a == b
    assert a.estimate == 2.5 and a.n == 30 and a.clusters == 6
    assert a.ci_lower is not None and a.ci_upper is not None
    assert a.ci_lower < 2.5 < a.ci_upper
    # a row bootstrap of 30 values would be about sqrt(5) narrower; the clustered one is not
    assert a.ci_upper - a.ci_lower > 1.5
    few = cluster_bootstrap(frame[frame["t"] < 2], "t", mean_x, 100, seed=1)
    assert few.ci_lower is None and few.estimate == 0.5
    assert cluster_bootstrap(frame.iloc[0:0], "t", mean_x, 10, seed=1).n == 0


def test_partial_correlation_by_hand():
    # covariate z splits the cases in two: residuals are deviations from each half's mean
    # x: [-1, 0, 1, -1, 0, 1]; y (half means 2 and 5): [-1, 1, 0, 0, -1, 1]
    # r = (1 + 0 + 0 + 0 + 0 + 1) / sqrt(4 * 4) = 0.5
    x, y, z = [1, 2, 3, 1, 2, 3], [1, 3, 2, 5, 4, 6], [0, 0, 0, 1, 1, 1]
    assert partial_correlation(x, y, z) == pytest.approx(0.5)
    # Spearman: ranks x [1.5, 3.5, 5.5] twice -> residuals [-2, 0, 2] twice; y ranks [1, 3, 2, 5, 4, 6]
    # -> [-1, 1, 0, 0, -1, 1]; r = (2 + 2) / sqrt(16 * 4) = 0.5
    assert partial_correlation(x, y, z, "spearman") == pytest.approx(0.5)
    # the first-order partial correlation formula agrees on random data
    rng = np.random.default_rng(3)
    a, b, c = rng.normal(size=(3, 40))
    b = b + a + c
    rab, rac, rbc = (float(np.corrcoef(u, v)[0, 1]) for u, v in ((a, b), (a, c), (b, c)))
    expected = (rab - rac * rbc) / math.sqrt((1 - rac**2) * (1 - rbc**2))
    assert partial_correlation(list(a), list(b), list(c)) == pytest.approx(expected)
    # too few cases, or a residual with no variation (x fully explained by z)
    assert partial_correlation([1, 2, 3], [1, 2, 3], [0, 1, 2]) is None
    assert partial_correlation([0, 0, 1, 1], [1, 2, 3, 5], [0, 0, 1, 1]) is None


def test_adjusted_difference_by_hand():
    # y = 1 + 2 * group + 0.5 * z exactly: the adjusted difference is 2, the raw one 3.5 - 2 = 1.5
    y, g, z = [3.0, 4.0, 1.5, 2.5], [True, True, False, False], [0.0, 2.0, 1.0, 3.0]
    assert adjusted_difference(y, g, z) == pytest.approx(2.0)
    assert adjusted_difference(y, [True, False, False, False], z) is None  # a group of 1


def test_average_ranks_and_fast_pearson_agree_with_scipy():
    assert list(average_ranks(np.array([10.0, 20.0, 20.0, 5.0]))) == [2.0, 3.5, 3.5, 1.0]
    rng = np.random.default_rng(11)
    x, y = rng.integers(0, 5, 50).astype(float), rng.normal(size=50)
    assert list(average_ranks(x)) == list(rankdata(x))
    assert fast_pearson(x, y) == pytest.approx(pearson_r(list(x), list(y)))
    assert fast_pearson(np.ones(5), y[:5]) is None and fast_pearson(x[:2], y[:2]) is None


def test_cluster_bootstrap_arrays_resamples_as_cluster_bootstrap_does():
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"t": [f"t{i % 6}" for i in range(60)], "x": rng.normal(size=60)})
    frame["y"] = frame.x + rng.normal(size=60)
    by_frame = cluster_bootstrap(frame, "t", lambda f: pearson_r(list(f.x), list(f.y)), 300, 9)
    by_arrays = cluster_bootstrap_arrays(
        {"x": frame.x.to_numpy(), "y": frame.y.to_numpy()},
        frame.t.to_numpy(),
        lambda a: fast_pearson(a["x"], a["y"]),
        300,
        9,
    )
    assert (by_arrays.n, by_arrays.clusters, by_arrays.samples_used) == (60, 6, 300)
    assert by_arrays.estimate == pytest.approx(by_frame.estimate)
    assert by_arrays.ci_lower == pytest.approx(by_frame.ci_lower)
    assert by_arrays.ci_upper == pytest.approx(by_frame.ci_upper)
    # fewer than 3 clusters: an estimate, no interval
    two = cluster_bootstrap_arrays(
        {"x": [1.0, 2.0, 3.0, 4.0]}, ["a", "a", "b", "b"], lambda a: float(a["x"].mean()), 50, 1
    )
    assert (two.estimate, two.ci_lower, two.clusters) == (2.5, None, 2)


def test_resample_ranks_by_counting_equal_ranks_by_sorting() -> None:
    from marts.stats import ResampledColumns, average_ranks, column_ranks

    rng = np.random.default_rng(3)
    values = rng.integers(0, 12, size=500).astype(float) / 4  # many ties
    full = ResampledColumns({"x": values})
    assert np.array_equal(full.ranks("x"), average_ranks(values))
    for _ in range(20):
        rows = rng.integers(0, len(values), size=len(values))
        sample = full.resample(rows)
        assert np.array_equal(sample["x"], values[rows])
        assert np.array_equal(column_ranks(sample, "x"), average_ranks(values[rows]))  # bit for bit
    assert np.array_equal(column_ranks({"x": values}, "x"), average_ranks(values))  # a plain mapping sorts
