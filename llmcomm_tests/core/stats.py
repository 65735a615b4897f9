"""The statistics every check and gate uses, in one place: percentiles, the binomial tail, Student's
t quantiles, trimmed centres and a seeded bootstrap.  Exact distributions come from scipy (a
well-kept library) rather than hand-written approximations.  No torch here."""

from __future__ import annotations

import math
from functools import lru_cache as _lru_cache
from typing import Sequence

TRIM = 0.1  # the trimmed mean of log times: robust to a busy host's stragglers, tighter than a median


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default); with n < 100 samples p99 is near the maximum."""
    if not len(values):
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50)


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    from scipy.stats import binom

    return float(binom.cdf(k, n, p))


def smallest_binomial_rejection(n: int, q: float, alpha: float) -> int | None:
    """The largest k with P(X <= k) < alpha, X ~ Binomial(n, q): a one-sided test at level
    ``alpha`` rejects "at least q of them" once k or fewer of n succeed.  None: it never rejects."""
    import numpy as np
    from scipy.stats import binom

    below = np.flatnonzero(binom.cdf(np.arange(n + 1), n, q) < alpha)
    return int(below[-1]) if len(below) else None


@_lru_cache(maxsize=4096)
def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (exact, any df > 0)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


@_lru_cache(maxsize=4096)
def normal_quantile(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def trimmed_mean(samples, trim: float = TRIM, axis: int = -1):
    """Mean after cutting ``trim`` of the samples off each end (along ``axis``)."""
    import numpy as np

    x = np.sort(np.asarray(samples, dtype=float), axis=axis)
    k = int(x.shape[axis] * trim)
    x = x[..., k:x.shape[axis] - k] if k else x
    return x.mean(axis=axis)


def positive_logs(samples: Sequence[float]):
    """log of the positive samples (times of zero say nothing about a ratio)."""
    import numpy as np

    return np.log([x for x in samples if x and x > 0])


def bootstrap(statistic, samples, resamples: int = 2000, seed: int = 0):
    """``statistic`` over ``resamples`` resamplings (rows) of ``samples``, seeded."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return statistic(rng.choice(np.asarray(samples), (resamples, len(samples))))


def median_ci(samples: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Distribution-free confidence interval of the median: the order statistics
    ``[x_(k), x_(n+1-k)]`` (1-based) cover it with probability ``1 − 2·P(B ≤ k−1)``, B ~ Bin(n, ½);
    k is the largest with that coverage at least ``confidence``.  None when even the full range
    ``[min, max]`` (coverage ``1 − 2^(1−n)``) falls short: 5 samples give at most 93.75 %."""
    import numpy as np
    from scipy.stats import binom

    xs = sorted(samples)
    n = len(xs)
    # P(B <= j) for j < n/2 rises with j: k is how many of them stay within the tail
    k = int(np.searchsorted(binom.cdf(np.arange(n // 2), n, 0.5), (1 - confidence) / 2, side="right"))
    if k == 0:
        return None
    return xs[k - 1], xs[n - k]


# -- paired comparisons (A/B gate) ----------------------------------------------------------------
# Per-pair log ratios d_i = log(B_i / A_i): Wilcoxon's signed-rank test, the Hodges-Lehmann
# estimate (median of the Walsh averages) and its distribution-free interval.  The interval's
# order statistics come from the exact null distribution of W+ (no ties assumed: log ratios of
# measured times are continuous), so a small n gets its true confidence, not a normal approximation.

WILCOXON_ARE = 3 / 3.141592653589793  # asymptotic efficiency vs the t test under normality (0.955)


def signed_rank_null(n: int):
    """P(W+ = k), k = 0 .. n(n+1)/2, under the null (exact; float, so any n)."""
    return _signed_rank_null(n).copy()


@_lru_cache(maxsize=256)
def _signed_rank_null(n: int):
    import numpy as np

    probs = np.zeros(n * (n + 1) // 2 + 1)
    probs[0] = 1.0
    top = 0
    for i in range(1, n + 1):
        shifted = np.zeros_like(probs)
        shifted[i:top + i + 1] = probs[:top + 1]
        probs = (probs + shifted) / 2
        top += i
    return probs


@_lru_cache(maxsize=256)
def _signed_rank_cdf(n: int):
    return _signed_rank_null(n).cumsum()


def wilcoxon_p(diffs: Sequence[float], alternative: str = "two-sided") -> float:
    """Wilcoxon signed-rank p value: exact for n <= 50 without ties or zeros (as scipy's "auto",
    from the cached null distribution: a sequential gate asks at every look), else scipy."""
    import numpy as np
    from scipy.stats import wilcoxon

    if len(diffs) == 0 or not any(diffs):
        return 1.0
    d = np.asarray(diffs, dtype=float)
    magnitudes = np.abs(d)
    if alternative == "two-sided" and len(d) <= 50 and magnitudes.all() and len(np.unique(magnitudes)) == len(d):
        ranks = np.argsort(np.argsort(magnitudes)) + 1
        w_plus = int(ranks[d > 0].sum())
        cdf = _signed_rank_cdf(len(d))
        return float(min(1.0, 2 * cdf[min(w_plus, len(cdf) - 1 - w_plus)]))
    return float(wilcoxon(diffs, alternative=alternative, method="auto").pvalue)


def walsh_averages(diffs: Sequence[float]):
    """(d_i + d_j) / 2 for i <= j, sorted."""
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    i, j = _pairs(len(d))
    return np.sort((d[i] + d[j]) / 2)


@_lru_cache(maxsize=256)
def _pairs(n: int):
    import numpy as np

    return np.triu_indices(n)


def hodges_lehmann(diffs: Sequence[float], walsh=None) -> float:
    """The one-sample Hodges-Lehmann estimate: the median of the Walsh averages (``walsh``: them,
    sorted, when already at hand)."""
    import numpy as np

    return float(np.median(walsh_averages(diffs) if walsh is None else walsh))


def hodges_lehmann_ci(diffs: Sequence[float], confidence: float = 0.95, walsh=None) -> tuple[float, float, float]:
    """(low, high, achieved confidence) of the shift, from the Walsh averages' order statistics
    (Hollander & Wolfe): [w_(k), w_(M+1-k)] with k the largest such that P(W+ <= k-1) <= alpha/2.
    When n is too small for ``confidence`` the interval is unbounded (-inf, inf)."""
    n = len(diffs)
    if n == 0:
        return float("-inf"), float("inf"), 0.0
    k, achieved = _walsh_order(n, confidence)
    if k == 0:
        return float("-inf"), float("inf"), 0.0
    w = walsh_averages(diffs) if walsh is None else walsh
    return float(w[k - 1]), float(w[len(w) - k]), achieved


@_lru_cache(maxsize=4096)
def _walsh_order(n: int, confidence: float) -> tuple[int, float]:
    """k of the interval [w_(k), w_(M+1-k)] and its achieved confidence (k = 0: none reaches it)."""
    import numpy as np

    cdf = _signed_rank_cdf(n)
    # P(W+ <= k) <= alpha/2  ->  w_(k+1) is a bound
    k = int(np.searchsorted(cdf, (1 - confidence) / 2, side="right"))
    return (k, 1 - 2 * float(cdf[k - 1])) if k else (0, 0.0)


def pairs_needed(sd_log: float, change: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Pairs for a signed-rank test to detect ``change`` (relative) with per-pair log-ratio s.d.
    ``sd_log``: ((z_{1-alpha/2} + z_power) * sd / ln(1 + change))^2 / ARE — a paired t test's
    sample size over the signed-rank test's asymptotic relative efficiency."""
    z = normal_quantile(1 - alpha / 2) + normal_quantile(power)
    return max(6, math.ceil((z * sd_log / math.log1p(change)) ** 2 / WILCOXON_ARE))


def min_detectable_change(sd_log: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest relative change n pairs detect with ``power`` (t quantiles, df n-1, scaled by
    the signed-rank test's efficiency)."""
    if n < 2:
        return float("inf")
    q = t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)
    log_change = q * sd_log / math.sqrt(n * WILCOXON_ARE)
    return math.expm1(log_change) if log_change < 700 else float("inf")  # 2 pairs at a tiny level: nothing


# -- group-sequential looks (A/B gate) ------------------------------------------------------------
# A gate that adds pairs and looks again spends its error rate at every look.  Lan & DeMets'
# alpha spending fixes how much of alpha may be spent by information fraction t (pairs / pair
# budget); the two-sided z bound of each look is then chosen so that, under the null and with the
# looks' statistics jointly normal (independent increments, Var = t), the chance of crossing first
# at look k is exactly alpha(t_k) - alpha(t_{k-1}).  Looks need not be planned in advance.


def obrien_fleming_spending(t: float, alpha: float) -> float:
    """Lan-DeMets O'Brien-Fleming-type spending of a one-sided ``alpha`` (gsDesign's sfLDOF):
    alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)).  Almost nothing is spent early (a few noisy
    pairs never fail a case); alpha(1) = alpha."""
    from scipy.stats import norm

    if t <= 0:
        return 0.0
    return float(2 * norm.sf(norm.isf(alpha / 2) / math.sqrt(min(t, 1.0))))


def group_sequential_bounds(fractions: Sequence[float], alpha: float, spending=obrien_fleming_spending) -> list[float]:
    """Symmetric two-sided z bounds c_1..c_K of total level ``alpha`` for looks at information
    ``fractions`` (increasing, in (0, 1]): each side spends ``spending(t, alpha / 2)``, so that
    P(|Z_j| < c_j for j < k, |Z_k| >= c_k) = 2 (spending(t_k) - spending(t_{k-1})) under the
    null (Armitage-McPherson-Rowe recursion on a Simpson grid; exit masses from the normal kernel
    in closed form).  A look with nothing left to spend gets an infinite bound."""
    return list(_bounds(tuple(float(t) for t in fractions), float(alpha), spending))


@_lru_cache(maxsize=4096)
def _bounds(fractions: tuple[float, ...], alpha: float, spending) -> tuple[float, ...]:
    import numpy as np
    from scipy.optimize import brentq
    from scipy.stats import norm

    bounds: list[float] = []
    grid = weights = density = None  # sub-density of S_{k-1} = Z sqrt(t) on the continuation region
    spent, previous = 0.0, 0.0
    for t in fractions:
        if not 0 < t <= 1 or t <= previous:
            raise ValueError(f"information fractions must increase within (0, 1]: {fractions}")
        target = max(0.0, 2 * spending(t, alpha / 2) - spent)
        step = t - previous
        if density is None:
            def exit_mass(c):
                return 2 * norm.sf(c)
        else:
            sd = math.sqrt(step)

            def exit_mass(c, g=grid, w=weights * density, sd=sd, root=math.sqrt(t)):
                edge = c * root
                return float(w @ (norm.sf((edge - g) / sd) + norm.cdf((-edge - g) / sd)))
        if target <= 0:
            c = math.inf
        elif exit_mass(0.0) <= target:
            c = 0.0
        else:
            c = brentq(lambda x: exit_mass(x) - target, 0.0, 40.0, xtol=1e-10)
        bounds.append(c)
        spent += exit_mass(c) if math.isfinite(c) else 0.0
        # the sub-density of S_k on |s| < c sqrt(t): the previous one convolved with N(0, step)
        edge = min(c, 12.0) * math.sqrt(t)
        m = max(401, int(2 * edge / (math.sqrt(step) / 10)) | 1)
        m = min(m | 1, 6001)
        new_grid = np.linspace(-edge, edge, m)
        if density is None:
            new_density = norm.pdf(new_grid, scale=math.sqrt(t))
        else:
            sd = math.sqrt(step)
            kernel = norm.pdf((new_grid[:, None] - grid[None, :]) / sd) / sd
            new_density = kernel @ (weights * density)
        h = new_grid[1] - new_grid[0]
        w = np.full(m, 2.0)
        w[1:-1:2] = 4.0
        w[0] = w[-1] = 1.0
        grid, weights, density, previous = new_grid, w * h / 3, new_density, t
    return tuple(bounds)


@_lru_cache(maxsize=4096)
def nominal_level(bound: float) -> float:
    """The two-sided level a z bound stands for: 2 (1 - Phi(c))."""
    from scipy.stats import norm

    return float(2 * norm.sf(bound)) if math.isfinite(bound) else 0.0
