"""Per-pair log ratios → a change with its interval, a verdict, and when to stop adding pairs.

For a metric, pair i gives d_i = log(B_i / A_i) (each side the run's centre, observe.py).  The
change is exp(HL) − 1 with HL the Hodges-Lehmann estimate of the d_i; its interval the
distribution-free one from the signed-rank distribution (inverting the signed-rank test: the
interval excludes 0 exactly when the Wilcoxon p is below the interval's level).

**Levels.**  A case gets its share of the session's family-wise rate (``LookPlan.level``: 5 %
over the session's A/B cases, suite/session.py), split equally over its timed metrics
(Bonferroni).  The gate looks again after every balanced pair, so each metric's share is spent
over the looks (:func:`~llmcomm_tests.core.stats.group_sequential_bounds`: Lan-DeMets,
O'Brien-Fleming-type spending on the information fraction pairs / pair budget): however many
looks a case takes, an unchanged B fails it with at most its share.  O'Brien-Fleming rather than
Pocock: it spends almost nothing on the first, noisiest looks and keeps nearly the whole level
for the last one, so a comparison that runs to its budget is judged at close to the level it
would have had with one look.

Rules, with τ the threshold (the spec's ``baseline.threshold``, else :data:`DEFAULT_THRESHOLD`):

* **slower** (fail): the interval at this look's level lies above 0 and the estimate above τ;
* **settled**: slower as above with the interval above τ, or the *futility* interval (at the
  metric's share, no look correction) lies below τ.  Stopping to pass can never raise a false
  alarm, so the futility rule needs no share of the level (a non-binding futility rule);
* **stop**: every metric settled, or one settled as slower (the case fails whatever the others
  say), or the pair budget is spent; only at a balanced count (as many AB as BA pairs).

Each row states its level and the smallest change it could have caught there (80 % power, from
the pairs' s.d.).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmcomm_tests.core import stats

DEFAULT_THRESHOLD = 0.05  # A/B sees far smaller changes than stored baselines (DEFAULT 10 %)
FAMILY_CONFIDENCE = 0.95
FAMILY_LEVEL = 1 - FAMILY_CONFIDENCE  # a case alone in its session gets the whole 5 %
POWER = 0.8
# The first look: W+ of n pairs reaches a two-sided p of 2 / 2^n at best (n = 10: 0.002), so
# earlier looks could never fail a case; under the session's share they are spent lightly anyway.
MIN_PAIRS = 10


@dataclass(frozen=True)
class LookPlan:
    """How a case's looks spend its ``level`` (two-sided): split over its metrics, each share
    spent over the looks by O'Brien-Fleming-type spending on pairs / ``max_pairs``.
    ``sequential=False`` judges every look at the full share, as if it were the only one (how
    the gate looked before; kept to show in tests what that costs)."""

    level: float = FAMILY_LEVEL
    max_pairs: int = 40
    sequential: bool = True

    def metric_level(self, metrics: int) -> float:
        return self.level / max(1, metrics)

    def look_level(self, looks: list[int], metrics: int) -> float:
        """The two-sided level of the last of ``looks`` (pair counts at each look so far)."""
        share = self.metric_level(metrics)
        if not self.sequential:
            return share
        fractions = tuple(min(1.0, n / max(1, self.max_pairs)) for n in looks)
        return stats.nominal_level(stats.group_sequential_bounds(fractions, share)[-1])

    def describe(self, looks: int) -> str:
        how = ("O'Brien-Fleming-type spending over looks" if self.sequential else "no correction for looks")
        return f"case level {self.level:.3g} (two-sided), {how}; {looks} looks"


@dataclass
class PairedChange:
    metric: str
    n: int
    change: float  # exp(HL) - 1
    low: float  # interval at ``level``, as relative changes
    high: float
    confidence: float  # achieved by the order statistics (>= 1 - level)
    p: float  # Wilcoxon signed-rank, two-sided: below ``level`` exactly when the interval excludes 0
    sd_log: float  # s.d. of the per-pair log ratios
    mdc: float  # minimum detectable change at ``level``
    level: float = 1 - FAMILY_CONFIDENCE  # the two-sided level this look judged the metric at
    futility_high: float = math.inf  # upper bound at the metric's share without look correction

    def slower(self, threshold: float) -> bool:
        return self.low > 0 and self.change > threshold

    def settled(self, threshold: float) -> bool:
        return self.low > threshold or self.futility_high < threshold

    def describe(self) -> str:
        return (f"{self.change:+.1%} [{self.confidence:.4g} CI {self.low:+.1%}, {self.high:+.1%}], "
                f"p={self.p:.2g} at level {self.level:.2g}, {self.n} pairs, s.d. of log ratio {self.sd_log:.3f}; "
                f"detects >= {self.mdc:.1%} at {POWER:.0%} power")


def per_metric_confidence(metrics: int) -> float:
    return 1 - (1 - FAMILY_CONFIDENCE) / max(1, metrics)


def paired_change(metric: str, log_ratios, metrics_in_family: int = 1, *, level: float | None = None,
                  futility_level: float | None = None) -> PairedChange:
    """The change of one metric; ``level``: this look's two-sided level (default: the 95 %
    family's share of one of ``metrics_in_family``), ``futility_level``: the futility interval's
    (default ``level``)."""
    import numpy as np

    d = np.asarray(log_ratios, dtype=float)
    if level is None:
        level = 1 - per_metric_confidence(metrics_in_family)
    futility_level = level if futility_level is None else futility_level
    walsh = stats.walsh_averages(d)
    low, high, achieved = stats.hodges_lehmann_ci(d, 1 - level, walsh) if level > 0 else (-math.inf, math.inf, 1.0)
    futility_high = high if futility_level == level else stats.hodges_lehmann_ci(d, 1 - futility_level, walsh)[1]
    sd = float(d.std(ddof=1)) if len(d) > 1 else float("inf")
    mdc = stats.min_detectable_change(sd, len(d), level, POWER) if level > 0 else math.inf
    return PairedChange(metric, len(d), math.expm1(stats.hodges_lehmann(d, walsh)), _rel(low), _rel(high), achieved,
                        stats.wilcoxon_p(d), sd, mdc, level, _rel(futility_high))


def _rel(x: float) -> float:
    return math.expm1(x) if math.isfinite(x) else x


def should_stop(changes: list[PairedChange], threshold: float) -> str | None:
    """Why to stop now, or None to add pairs."""
    slower = [c.metric for c in changes if c.low > threshold]
    if slower:
        return f"settled as slower than {threshold:.0%}: {', '.join(slower)}"
    if changes and all(c.settled(threshold) for c in changes):
        return f"every interval settled against {threshold:.0%}"
    return None
