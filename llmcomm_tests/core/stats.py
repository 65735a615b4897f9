"""The statistics every check and gate uses, in one place: percentiles, the binomial tail, Student's
t quantiles, trimmed centres and a seeded bootstrap.  Exact distributions come from scipy (a
well-kept library) rather than hand-written approximations.  No torch here."""

from __future__ import annotations

import math
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


def t_quantile(p: float, df: float) -> float:
    """Student's t quantile (exact, any df > 0)."""
    from scipy.stats import t

    return float(t.ppf(p, df))


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


def wilcoxon_p(diffs: Sequence[float], alternative: str = "two-sided") -> float:
    """Wilcoxon signed-rank p value (scipy: exact for n <= 50 without ties or zeros)."""
    from scipy.stats import wilcoxon

    if len(diffs) == 0 or not any(diffs):
        return 1.0
    return float(wilcoxon(diffs, alternative=alternative, method="auto").pvalue)


def walsh_averages(diffs: Sequence[float]):
    """(d_i + d_j) / 2 for i <= j, sorted."""
    import numpy as np

    d = np.asarray(diffs, dtype=float)
    i, j = np.triu_indices(len(d))
    return np.sort((d[i] + d[j]) / 2)


def hodges_lehmann(diffs: Sequence[float]) -> float:
    """The one-sample Hodges-Lehmann estimate: the median of the Walsh averages."""
    import numpy as np

    return float(np.median(walsh_averages(diffs)))


def hodges_lehmann_ci(diffs: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(low, high, achieved confidence) of the shift, from the Walsh averages' order statistics
    (Hollander & Wolfe): [w_(k), w_(M+1-k)] with k the largest such that P(W+ <= k-1) <= alpha/2.
    When n is too small for ``confidence`` the interval is unbounded (-inf, inf)."""
    n = len(diffs)
    if n == 0:
        return float("-inf"), float("inf"), 0.0
    cdf = signed_rank_null(n).cumsum()
    alpha = 1 - confidence
    k = 0
    while k < len(cdf) and cdf[k] <= alpha / 2:  # P(W+ <= k) <= alpha/2  ->  w_(k+1) is a bound
        k += 1
    if k == 0:
        return float("-inf"), float("inf"), 0.0
    w = walsh_averages(diffs)
    achieved = 1 - 2 * float(cdf[k - 1])
    return float(w[k - 1]), float(w[len(w) - k]), achieved


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
    return math.expm1(q * sd_log / math.sqrt(n * WILCOXON_ARE))
