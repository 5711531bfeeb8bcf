"""Statistics the marts need, as small pure functions (standard library, numpy and scipy).

- correlations (Pearson, Spearman) with Fisher-z confidence intervals (Spearman's standard error
  uses the Fieller, Hartley & Pearson 1957 factor 1.06);
- the difference between two dependent correlations that share a variable (Zou 2007), for
  "does patient-rated alliance predict adherence better than clinician-rated alliance";
- one-way random-effects variance components for unbalanced groups (ANOVA estimator with n0),
  the ICC, empirical-Bayes shrunken group means with intervals, and funnel-plot limits, plain and
  allowing for overdispersion (Spiegelhalter 2005: additive random effects, Winsorised tau2);
- a deterministic cluster bootstrap interval for the ICC, and a generic therapist-clustered
  percentile bootstrap for any statistic of a frame (`cluster_bootstrap`).

Where scipy computes the same estimator, scipy does it: Pearson's r (`scipy.stats.pearsonr`) and
Spearman's rho with average ranks for ties (`scipy.stats.spearmanr`, i.e. Pearson's r of
`scipy.stats.rankdata` ranks). The rest is the project's own code on purpose, because scipy's
version is a different estimator or does not exist: p-values and intervals here use the Fisher-z
normal approximation (scipy's `pearsonr` p-value is the exact t test, and it has no Spearman
interval with the 1.06 factor); scipy has no Zou (2007) interval for dependent correlations, no
one-way random-effects ICC for unbalanced groups (the ANOVA n0 estimator), no empirical-Bayes
shrinkage, and `scipy.stats.bootstrap` resamples observations, not clusters (therapists).
tests/unit/test_marts_stats.py cross-checks the functions here against scipy on random data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
from scipy import stats as scipy_stats


def z_for(level: float) -> float:
    """Two-sided standard normal quantile for a confidence level (0.95 -> 1.959964)."""
    return NormalDist().inv_cdf(0.5 + level / 2)


@dataclass(frozen=True)
class Correlation:
    """A correlation with its Fisher-z interval and a normal-approximation p-value."""

    method: str
    estimate: float | None
    ci_lower: float | None
    ci_upper: float | None
    n: int
    p_value: float | None


def _paired(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray] | None:
    """x and y as float arrays; None when a correlation is undefined (fewer than 3 pairs, or either
    side constant: scipy would warn and return NaN)."""
    if len(x) != len(y):
        raise ValueError("x and y differ in length")
    if len(x) < 3:
        return None
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if np.ptp(xa) == 0 or np.ptp(ya) == 0:
        return None
    return xa, ya


def pearson_r(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r (scipy.stats.pearsonr); None with fewer than 3 pairs or no variation."""
    pair = _paired(x, y)
    if pair is None:
        return None
    return float(scipy_stats.pearsonr(*pair).statistic)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's r of the ranks, ties given their average rank (scipy.stats.spearmanr)."""
    pair = _paired(x, y)
    if pair is None:
        return None
    return float(scipy_stats.spearmanr(*pair).statistic)


def fisher_ci(r: float, n: int, level: float = 0.95, se_factor: float = 1.0) -> tuple[float, float] | None:
    """Fisher-z interval tanh(atanh(r) -+ z * sqrt(se_factor / (n - 3))); None when n <= 3."""
    if n <= 3:
        return None
    r = max(min(r, 0.9999999), -0.9999999)
    half = z_for(level) * math.sqrt(se_factor / (n - 3))
    zr = math.atanh(r)
    return math.tanh(zr - half), math.tanh(zr + half)


def correlate(x: Sequence[float], y: Sequence[float], method: str, level: float = 0.95) -> Correlation:
    """Pearson or Spearman correlation of paired values, with its Fisher-z interval."""
    n = len(x)
    if method == "pearson":
        r, factor = pearson_r(x, y), 1.0
    elif method == "spearman":
        r, factor = spearman_rho(x, y), 1.06
    else:
        raise ValueError(f"unknown correlation method {method!r}")
    if r is None:
        return Correlation(method, None, None, None, n, None)
    ci = fisher_ci(r, n, level, factor)
    p = None
    if n > 3:
        zstat = abs(math.atanh(max(min(r, 0.9999999), -0.9999999))) * math.sqrt((n - 3) / factor)
        p = math.erfc(zstat / math.sqrt(2))
    return Correlation(method, r, ci[0] if ci else None, ci[1] if ci else None, n, p)


def _residuals(v: np.ndarray, covariate: np.ndarray) -> np.ndarray:
    """v minus its least-squares fit on an intercept and `covariate`."""
    design = np.column_stack([np.ones_like(covariate), covariate])
    coef, *_ = np.linalg.lstsq(design, v, rcond=None)
    return np.asarray(v - design @ coef)


def partial_correlation(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    covariate: Sequence[float] | np.ndarray,
    method: str = "pearson",
) -> float | None:
    """Correlation of x and y adjusted for one covariate: Pearson's r of the residuals of x and of y
    after a least-squares fit on the covariate (with an intercept), i.e. the first-order partial
    correlation (r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2)). `spearman` does the same on the
    ranks (average ranks for ties). With y = change from baseline and covariate = baseline this is the
    association with change adjusted for baseline (equivalently, with the endpoint given baseline).
    None with fewer than 4 cases or when a residual has no variation."""
    if not len(x) == len(y) == len(covariate):
        raise ValueError("x, y and covariate differ in length")
    if len(x) < 4:
        return None
    xa, ya, za = (np.asarray(v, dtype=float) for v in (x, y, covariate))
    if method == "spearman":
        xa, ya, za = (average_ranks(v) for v in (xa, ya, za))
    elif method != "pearson":
        raise ValueError(f"unknown correlation method {method!r}")
    rx, ry = _residuals(xa, za), _residuals(ya, za)
    if np.ptp(rx) < 1e-12 or np.ptp(ry) < 1e-12:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def adjusted_difference(
    y: Sequence[float] | np.ndarray,
    group: Sequence[bool] | np.ndarray,
    covariate: Sequence[float] | np.ndarray,
) -> float | None:
    """The coefficient of a 0/1 group indicator in the least-squares fit y ~ 1 + group + covariate:
    the difference in y between the groups adjusted for the covariate (ANCOVA). None unless each group
    has at least 2 cases and the fit is of full rank."""
    if not len(y) == len(group) == len(covariate):
        raise ValueError("y, group and covariate differ in length")
    g = np.asarray(group, dtype=float)
    if g.sum() < 2 or (1 - g).sum() < 2:
        return None
    design = np.column_stack([np.ones_like(g), g, np.asarray(covariate, dtype=float)])
    if np.linalg.matrix_rank(design) < 3:
        return None
    coef, *_ = np.linalg.lstsq(design, np.asarray(y, dtype=float), rcond=None)
    return float(coef[1])


def zou_difference(
    r12: float, r13: float, r23: float, n: int, level: float = 0.95
) -> tuple[float, float, float] | None:
    """r12 - r13 for two correlations sharing variable 1, with Zou's (2007) interval.

    Variable 1 is the outcome (e.g. MARS), 2 and 3 the predictors (patient- and clinician-rated
    alliance), r23 their correlation, all on the same n cases.
    """
    c12, c13 = fisher_ci(r12, n, level), fisher_ci(r13, n, level)
    if c12 is None or c13 is None:
        return None
    (l1, u1), (l2, u2) = c12, c13
    denom = (1 - r12**2) * (1 - r13**2)
    if denom <= 0:
        return None
    corr = ((r23 - 0.5 * r12 * r13) * (1 - r12**2 - r13**2 - r23**2) + r23**3) / denom
    d = r12 - r13
    lower = d - math.sqrt(max(0.0, (r12 - l1) ** 2 + (u2 - r13) ** 2 - 2 * corr * (r12 - l1) * (u2 - r13)))
    upper = d + math.sqrt(max(0.0, (u1 - r12) ** 2 + (r13 - l2) ** 2 - 2 * corr * (u1 - r12) * (r13 - l2)))
    return d, lower, upper


@dataclass(frozen=True)
class VarianceComponents:
    """One-way random-effects decomposition of observations nested in groups."""

    grand_mean: float
    tau2: float  # between-group variance (truncated at 0)
    sigma2: float  # within-group variance
    icc: float | None
    groups: int
    observations: int
    n0: float | None


def variance_components(groups: Mapping[str, Sequence[float]]) -> VarianceComponents | None:
    """ANOVA estimator for unbalanced groups: MSB, MSW, n0 = (N - sum n_i^2 / N) / (k - 1),
    tau2 = max(0, (MSB - MSW) / n0), sigma2 = MSW, ICC = tau2 / (tau2 + sigma2).

    The grand mean is the mean of all observations. None when no group has data. With one group or
    no within-group replication tau2 or sigma2 cannot be separated and the ICC is None.
    """
    data = {g: np.asarray(v, dtype=float) for g, v in groups.items() if len(v) > 0}
    if not data:
        return None
    k = len(data)
    total = sum(len(v) for v in data.values())
    grand = float(np.concatenate(list(data.values())).mean())
    if k < 2 or total - k < 1:
        return VarianceComponents(grand, 0.0, 0.0, None, k, total, None)
    ssb = sum(len(v) * (float(v.mean()) - grand) ** 2 for v in data.values())
    ssw = sum(float(((v - v.mean()) ** 2).sum()) for v in data.values())
    msb, msw = ssb / (k - 1), ssw / (total - k)
    n0 = (total - sum(len(v) ** 2 for v in data.values()) / total) / (k - 1)
    tau2 = max(0.0, (msb - msw) / n0) if n0 > 0 else 0.0
    icc = tau2 / (tau2 + msw) if tau2 + msw > 0 else None
    return VarianceComponents(grand, tau2, msw, icc, k, total, n0)


@dataclass(frozen=True)
class Shrunken:
    """Empirical-Bayes estimate of one group mean."""

    estimate: float
    weight: float  # tau2 / (tau2 + sigma2 / n): 0 = all grand mean, 1 = all own mean
    ci_lower: float
    ci_upper: float


def eb_shrink(mean: float, n: int, grand: float, tau2: float, sigma2: float, level: float = 0.95) -> Shrunken:
    """grand + w * (mean - grand), w = tau2 / (tau2 + sigma2 / n); interval from the posterior
    variance w * sigma2 / n (= 1 / (1/tau2 + n/sigma2))."""
    if n < 1:
        raise ValueError("a group needs at least one observation")
    if tau2 <= 0:
        return Shrunken(grand, 0.0, grand, grand)
    if sigma2 <= 0:
        return Shrunken(mean, 1.0, mean, mean)
    w = tau2 / (tau2 + sigma2 / n)
    est = grand + w * (mean - grand)
    half = z_for(level) * math.sqrt(w * sigma2 / n)
    return Shrunken(est, w, est - half, est + half)


def funnel_limits(grand: float, sigma: float, n: int, z: float) -> tuple[float, float]:
    """Funnel-plot control limits grand -+ z * sigma / sqrt(n)."""
    if n < 1:
        raise ValueError("n must be at least 1")
    half = z * sigma / math.sqrt(n)
    return grand - half, grand + half


def overdispersed_funnel_limits(
    grand: float, sigma2: float, n: int, tau2: float, z: float
) -> tuple[float, float]:
    """Funnel limits allowing for overdispersion (Spiegelhalter 2005, additive random effects):
    grand -+ z * sqrt(sigma2 / n + tau2). With tau2 = 0 they are the plain `funnel_limits`."""
    if n < 1:
        raise ValueError("n must be at least 1")
    half = z * math.sqrt(sigma2 / n + max(0.0, tau2))
    return grand - half, grand + half


def winsorised_tau2(
    means: Sequence[float], ns: Sequence[int], grand: float, sigma2: float, winsor: float = 0.1
) -> float:
    """Between-unit variance for overdispersed funnel limits, estimated as in Spiegelhalter (2005),
    "Funnel plots for comparing institutional performance", Stat Med 24:1185-1202: z-scores
    z_i = (mean_i - grand) / sqrt(sigma2 / n_i) are Winsorised at the `winsor` and 1 - `winsor`
    quantiles (so the outliers the plot looks for do not widen its own limits), phi = mean(z_w^2),
    and with weights w_i = n_i / sigma2 the additive random-effects (DerSimonian-Laird type) estimate
    tau2 = (k * phi - (k - 1)) / (sum w - sum w^2 / sum w), truncated at 0.

    0 with fewer than 2 units or no within-unit variance (no overdispersion can be estimated).
    Quantiles use numpy's default linear interpolation.
    """
    if len(means) != len(ns):
        raise ValueError("means and ns differ in length")
    k = len(means)
    if k < 2 or sigma2 <= 0:
        return 0.0
    n = np.asarray(ns, dtype=float)
    if np.any(n < 1):
        raise ValueError("every unit needs n >= 1")
    z = (np.asarray(means, dtype=float) - grand) / np.sqrt(sigma2 / n)
    lo, hi = np.quantile(z, winsor), np.quantile(z, 1 - winsor)
    phi = float(np.mean(np.clip(z, lo, hi) ** 2))
    w = n / sigma2
    denom = float(w.sum() - (w**2).sum() / w.sum())
    if denom <= 0:
        return 0.0
    return max(0.0, (k * phi - (k - 1)) / denom)


def bootstrap_icc(
    groups: Mapping[str, Sequence[float]], samples: int, seed: int, level: float = 0.95
) -> tuple[float, float] | None:
    """Percentile interval of the ICC over a cluster bootstrap (groups resampled with replacement).

    Deterministic for a given seed. None with fewer than 3 groups.
    """
    keys = sorted(g for g, v in groups.items() if len(v) > 0)
    if len(keys) < 3:
        return None
    rng = np.random.default_rng(seed)
    values: list[float] = []
    for _ in range(samples):
        pick = rng.integers(0, len(keys), size=len(keys))
        resampled = {f"{i}": groups[keys[j]] for i, j in enumerate(pick)}
        vc = variance_components(resampled)
        if vc is not None and vc.icc is not None:
            values.append(vc.icc)
    if len(values) < samples // 2:
        return None
    alpha = (1 - level) / 2
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1 - alpha))


@dataclass(frozen=True)
class ClusterInterval:
    """A statistic with its therapist-clustered percentile bootstrap interval."""

    estimate: float | None
    ci_lower: float | None
    ci_upper: float | None
    n: int
    clusters: int
    samples_used: int


def cluster_bootstrap(
    rows: Sequence[Mapping[str, object]] | object,
    cluster: str,
    statistic: Callable[[Any], float | None],
    samples: int,
    seed: int,
    level: float = 0.95,
) -> ClusterInterval:
    """Percentile interval of `statistic` over a cluster bootstrap: whole clusters (e.g. therapists)
    are resampled with replacement, so rows nested in one cluster are never treated as independent.

    `rows` is a pandas DataFrame (or anything `pandas.DataFrame()` accepts) with a `cluster` column;
    `statistic(frame) -> float | None` is applied to the full data (the estimate) and to each
    resample (a resample where it is None or not finite is dropped). Deterministic for a seed.
    The interval is None with fewer than 3 clusters or when under half the resamples give a value.
    """
    import pandas as pd  # local: the rest of this module is numpy/scipy only

    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    n = len(frame)
    if n == 0:
        return ClusterInterval(None, None, None, 0, 0, 0)
    # each cluster's row positions: a resample takes them in the drawn order (the same rows, in the
    # same order, as concatenating the clusters' frames, without building a frame per cluster)
    positions = {
        k: np.asarray(idx, dtype=np.int64) for k, idx in frame.groupby(cluster, sort=True).indices.items()
    }
    keys = sorted(positions)  # the order groupby(sort=True) gives
    estimate = statistic(frame)
    if estimate is not None and not math.isfinite(estimate):
        estimate = None
    if len(keys) < 3 or estimate is None:
        return ClusterInterval(estimate, None, None, n, len(keys), 0)
    rng = np.random.default_rng(seed)
    values: list[float] = []
    for _ in range(samples):
        pick = rng.integers(0, len(keys), size=len(keys))
        resample = frame.take(np.concatenate([positions[keys[j]] for j in pick])).reset_index(drop=True)
        v = statistic(resample)
        if v is not None and math.isfinite(v):
            values.append(float(v))
    if len(values) < samples / 2:
        return ClusterInterval(estimate, None, None, n, len(keys), len(values))
    alpha = (1 - level) / 2
    return ClusterInterval(
        float(estimate),
        float(np.quantile(values, alpha)),
        float(np.quantile(values, 1 - alpha)),
        n,
        len(keys),
        len(values),
    )


def cluster_bootstrap_arrays(
    columns: Mapping[str, Sequence[float] | np.ndarray],
    clusters: Sequence[object] | np.ndarray,
    statistic: Callable[[Mapping[str, np.ndarray]], float | None],
    samples: int,
    seed: int,
    level: float = 0.95,
) -> ClusterInterval:
    """`cluster_bootstrap` on plain arrays: the same resampling (clusters in sorted order, the same
    draws for a seed, rows of each drawn cluster in their original order) and the same interval, with
    `statistic` given a dict of column arrays instead of a DataFrame. The marts' associations bootstrap
    dozens of statistics; building a DataFrame per resample costs far more than the statistic.
    """
    arrays = {name: np.asarray(values, dtype=float) for name, values in columns.items()}
    labels = np.asarray(clusters, dtype=object)
    n = len(labels)
    if any(len(a) != n for a in arrays.values()):
        raise ValueError("every column needs one value per cluster label")
    if n == 0:
        return ClusterInterval(None, None, None, 0, 0, 0)
    keys = sorted(set(labels.tolist()))
    positions = [np.flatnonzero(labels == k) for k in keys]
    full = ResampledColumns(arrays)
    estimate = statistic(full)
    if estimate is not None and not math.isfinite(estimate):
        estimate = None
    if len(keys) < 3 or estimate is None:
        return ClusterInterval(estimate, None, None, n, len(keys), 0)
    rng = np.random.default_rng(seed)
    values: list[float] = []
    for _ in range(samples):
        pick = rng.integers(0, len(keys), size=len(keys))
        rows = np.concatenate([positions[j] for j in pick])
        v = statistic(full.resample(rows))
        if v is not None and math.isfinite(v):
            values.append(float(v))
    if len(values) < samples / 2:
        return ClusterInterval(float(estimate), None, None, n, len(keys), len(values))
    alpha = (1 - level) / 2
    return ClusterInterval(
        float(estimate),
        float(np.quantile(values, alpha)),
        float(np.quantile(values, 1 - alpha)),
        n,
        len(keys),
        len(values),
    )


class ResampledColumns(Mapping[str, np.ndarray]):
    """The columns of one bootstrap resample (rows of the full data), read lazily, with their ranks.

    `ranks(name)` equals `average_ranks(self[name])` exactly, without sorting the resample: every
    value's code among the full data's sorted distinct values is found once (`np.unique`), and a
    resample's average ranks follow from counting its codes (`np.bincount`). A value's rank is the
    number of resampled values at or below it minus half its ties less one, the same integers either
    way. At a million responses the Spearman bootstraps sorted ~100 million values per mart build.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        rows: np.ndarray | None = None,
        codes: dict[str, tuple[np.ndarray, int]] | None = None,
    ) -> None:
        self._arrays = arrays
        self._rows = rows
        self._codes = {} if codes is None else codes  # shared by the full data and its resamples
        self._cache: dict[str, np.ndarray] = {}

    def resample(self, rows: np.ndarray) -> ResampledColumns:
        """The resample made of `rows` of the full data (rows of drawn clusters, repeats included)."""
        return ResampledColumns(self._arrays, rows, self._codes)

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            full = self._arrays[name]
            self._cache[name] = full if self._rows is None else full[self._rows]
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def ranks(self, name: str) -> np.ndarray:
        """Average ranks (1..n, ties averaged) of column `name` in this sample."""
        if name not in self._codes:
            _, inverse = np.unique(self._arrays[name], return_inverse=True)
            self._codes[name] = (inverse.reshape(-1), int(inverse.max()) + 1 if len(inverse) else 0)
        codes, distinct = self._codes[name]
        sample = codes if self._rows is None else codes[self._rows]
        counts = np.bincount(sample, minlength=distinct)
        ends = np.cumsum(counts)
        return np.asarray((ends - (counts - 1) / 2.0)[sample], dtype=float)


def column_ranks(columns: Mapping[str, np.ndarray], name: str) -> np.ndarray:
    """Average ranks of `columns[name]`: from counts on a `ResampledColumns`, else by sorting."""
    if isinstance(columns, ResampledColumns):
        return columns.ranks(name)
    return average_ranks(columns[name])


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their average rank (what scipy.stats.rankdata does by default)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return np.asarray((ends - (counts - 1) / 2.0)[inverse], dtype=float)


def fast_pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Pearson's r of two float arrays (numpy, for bootstrap loops); None with fewer than 3 pairs or
    either side constant. Equal to `pearson_r` up to rounding."""
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    xc, yc = x - x.mean(), y - y.mean()
    return float((xc @ yc) / math.sqrt(float(xc @ xc) * float(yc @ yc)))


def mean_difference_ci(
    a: Sequence[float], b: Sequence[float], level: float = 0.95
) -> tuple[float, float, float] | None:
    """mean(a) - mean(b) with a Welch-type normal interval; None unless both groups have >= 2 values."""
    if len(a) < 2 or len(b) < 2:
        return None
    aa, bb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = float(aa.mean() - bb.mean())
    se = math.sqrt(float(aa.var(ddof=1)) / len(aa) + float(bb.var(ddof=1)) / len(bb))
    half = z_for(level) * se
    return d, d - half, d + half


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float] | None:
    """Mean with a normal interval; None with fewer than 2 values."""
    if len(values) < 2:
        return None
    arr = np.asarray(values, dtype=float)
    m = float(arr.mean())
    half = z_for(level) * float(arr.std(ddof=1)) / math.sqrt(len(arr))
    return m, m - half, m + half
