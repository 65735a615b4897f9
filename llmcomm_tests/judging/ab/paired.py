"""Per-pair log ratios → a change with its interval, a verdict, and when to stop adding pairs.

For a metric, pair i gives d_i = log(B_i / A_i) (each side the run's centre, observe.py).  The
change is exp(HL) − 1 with HL the Hodges-Lehmann estimate of the d_i; its interval the
distribution-free one from the signed-rank distribution, at the family level (Bonferroni over the
case's timed metrics, 95 % family-wise).  Rules, with τ the threshold (the spec's
``baseline.threshold``, else :data:`DEFAULT_THRESHOLD`):

* **slower** (fail): the whole interval lies above 0 and the estimate above τ;
* **settled**: the interval no longer contains τ (it lies wholly above or wholly below it);
* **stop**: every metric settled, or one settled as slower (the case fails whatever the others
  say), or the pair budget is spent; only at a balanced count (as many AB as BA pairs).

The minimum detectable change (80 % power at the family level, from the pairs' s.d.) says what a
pass was able to see.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmcomm_tests.core import stats

DEFAULT_THRESHOLD = 0.05  # A/B sees far smaller changes than stored baselines (DEFAULT 10 %)
FAMILY_CONFIDENCE = 0.95
POWER = 0.8
MIN_PAIRS = 10  # W+ can reach p < 0.05/11 (11 timed metrics of a TP2 case) from n = 9 on


@dataclass
class PairedChange:
    metric: str
    n: int
    change: float  # exp(HL) - 1
    low: float  # interval, as relative changes
    high: float
    confidence: float  # achieved by the order statistics (>= the family level's per-metric share)
    p: float  # Wilcoxon signed-rank, two-sided
    sd_log: float  # s.d. of the per-pair log ratios
    mdc: float  # minimum detectable change

    def slower(self, threshold: float) -> bool:
        return self.low > 0 and self.change > threshold

    def settled(self, threshold: float) -> bool:
        return self.low > threshold or self.high < threshold

    def describe(self) -> str:
        return (f"{self.change:+.1%} [{self.confidence:.1%} CI {self.low:+.1%}, {self.high:+.1%}], "
                f"p={self.p:.2g}, {self.n} pairs, s.d. of log ratio {self.sd_log:.3f}; "
                f"detects >= {self.mdc:.1%} at {POWER:.0%} power")


def per_metric_confidence(metrics: int) -> float:
    return 1 - (1 - FAMILY_CONFIDENCE) / max(1, metrics)


def paired_change(metric: str, log_ratios, metrics_in_family: int = 1) -> PairedChange:
    import numpy as np

    d = np.asarray(log_ratios, dtype=float)
    confidence = per_metric_confidence(metrics_in_family)
    low, high, achieved = stats.hodges_lehmann_ci(d, confidence)
    sd = float(d.std(ddof=1)) if len(d) > 1 else float("inf")
    return PairedChange(metric, len(d), math.expm1(stats.hodges_lehmann(d)), _rel(low), _rel(high), achieved,
                        stats.wilcoxon_p(d), sd,
                        stats.min_detectable_change(sd, len(d), 1 - confidence, POWER))


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
