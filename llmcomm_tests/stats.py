"""The statistics every check and gate uses, in one place: percentiles, the binomial tail, Student's
t quantiles, trimmed centres and a seeded bootstrap.  Exact distributions come from scipy (a
well-kept library) rather than hand-written approximations.  No torch here."""

from __future__ import annotations

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
    """Distribution-free confidence interval of the median: order statistics from the binomial."""
    from scipy.stats import binom

    xs = sorted(samples)
    n = len(xs)
    if n < 3:
        return None
    lo = int(binom.ppf((1 - confidence) / 2, n, 0.5))
    hi = n - 1 - lo
    lo = max(0, min(lo, n - 1))
    return xs[lo], xs[max(lo, hi)]

