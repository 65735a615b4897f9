"""A/B statistics against values worked out by hand or printed in tables."""

import math

import numpy as np
import pytest

from llmcomm_tests.core import stats
from llmcomm_tests.judging.ab.paired import paired_change, should_stop
from llmcomm_tests.judging.ab.schedule import AB, BA, Schedule


def test_signed_rank_null_small_n_by_enumeration():
    # n = 3: subsets of {1,2,3} by sum: 0:{} 1:{1} 2:{2} 3:{3},{1,2} 4:{1,3} 5:{2,3} 6:{1,2,3}
    assert list(stats.signed_rank_null(3) * 8) == [1, 1, 1, 2, 1, 1, 1]
    assert stats.signed_rank_null(10).sum() == pytest.approx(1.0)


def test_wilcoxon_exact_p_by_hand():
    # |d| ranks: 0.05->1 (negative), 0.10->2, 0.12->3, 0.15->4, 0.20->5, 0.30->6: W- = 1.
    # Exact two-sided p = 2 P(W+ <= 1) = 2 * 2/64 = 0.0625 (no normal approximation).
    d = [0.1, 0.2, -0.05, 0.3, 0.15, 0.12]
    assert stats.wilcoxon_p(d) == pytest.approx(0.0625)
    # All six positive: p = 2/64, the smallest a signed-rank test with n = 6 can give.
    assert stats.wilcoxon_p([0.1, 0.2, 0.05, 0.3, 0.15, 0.12]) == pytest.approx(2 / 64)


def test_wilcoxon_exact_p_matches_own_null_distribution():
    rng = np.random.default_rng(1)
    d = rng.normal(0.05, 0.1, 12)
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    w_plus = int(ranks[d > 0].sum())
    cdf = stats.signed_rank_null(12).cumsum()
    m = 12 * 13 // 2
    lower = min(w_plus, m - w_plus)
    assert stats.wilcoxon_p(d) == pytest.approx(min(1.0, 2 * cdf[lower]))


def test_hodges_lehmann_estimate_by_hand():
    # Walsh averages of [1, 2, 4]: 1, 1.5, 2, 2.5, 3, 4 -> median 2.25
    assert stats.hodges_lehmann([1, 2, 4]) == pytest.approx(2.25)
    assert list(stats.walsh_averages([1, 2, 4])) == [1, 1.5, 2, 2.5, 3, 4]


def test_hodges_lehmann_interval_order_statistics():
    d = [0.1, 0.2, -0.05, 0.3, 0.15, 0.12]
    # n = 6: P(W+ <= 0) = 1/64 <= 0.025 < P(W+ <= 1) = 2/64, so k = 1: the 96.9 % interval is the
    # range of the Walsh averages, [min d, max d].
    low, high, achieved = stats.hodges_lehmann_ci(d, 0.95)
    assert (low, high) == (pytest.approx(-0.05), pytest.approx(0.3))
    assert achieved == pytest.approx(1 - 2 / 64)
    # n = 5 cannot reach 95 %: P(W+ <= 0) = 1/32 > 0.025 -> unbounded.
    assert stats.hodges_lehmann_ci(d[:5], 0.95)[:2] == (-math.inf, math.inf)


def test_hodges_lehmann_interval_covers_the_shift():
    rng = np.random.default_rng(0)
    covered = sum(lo <= 0.1 <= hi for lo, hi, _ in
                  (stats.hodges_lehmann_ci(rng.normal(0.1, 0.2, 15), 0.95) for _ in range(400)))
    assert 0.92 <= covered / 400 <= 0.99


def test_t_quantiles_known_values():
    # Student's t table: t_{0.975, 1} = 12.706, t_{0.975, 4} = 2.776, t_{0.95, 10} = 1.812
    assert stats.t_quantile(0.975, 1) == pytest.approx(12.706, abs=1e-3)
    assert stats.t_quantile(0.975, 4) == pytest.approx(2.776, abs=1e-3)
    assert stats.t_quantile(0.95, 10) == pytest.approx(1.812, abs=1e-3)


def test_pairs_needed_matches_domain_rule_of_thumb():
    # The paired t test's rule of thumb ((2.8 sd)/ln(1+delta))^2 -> sd 0.1: ~9 pairs for 10 %, sd 0.2: ~35 (t test);
    # the signed-rank test needs 1/0.955 as many.
    assert stats.pairs_needed(0.1, 0.10) == math.ceil((2.8016 * 0.1 / math.log(1.1)) ** 2 / stats.WILCOXON_ARE)
    assert 34 <= stats.pairs_needed(0.2, 0.10) <= 38
    assert stats.min_detectable_change(0.2, 40) < stats.min_detectable_change(0.2, 10)
    # two pairs at a session's share of 5 %: no change is detectable, and saying so must not overflow
    assert stats.min_detectable_change(0.5, 2, alpha=1e-5) == float("inf")


def test_paired_change_and_verdict_rules():
    rng = np.random.default_rng(3)
    slower = paired_change("op x", np.log(1.2) + rng.normal(0, 0.05, 20), metrics_in_family=1)
    assert slower.change == pytest.approx(0.2, abs=0.05) and slower.low > 0.05
    assert slower.slower(0.05) and should_stop([slower], 0.05).startswith("settled as slower")
    same = paired_change("op x", rng.normal(0, 0.01, 20))
    assert not same.slower(0.05) and same.settled(0.05) and should_stop([same], 0.05).startswith("every")
    noisy = paired_change("tpot", rng.normal(0, 0.4, 10))
    assert not noisy.settled(0.05) and should_stop([noisy, same], 0.05) is None
    # Bonferroni over the family widens each interval
    wide = paired_change("op x", np.log(1.2) + rng.normal(0, 0.05, 20), metrics_in_family=11)
    assert wide.confidence > slower.confidence


def test_schedule_is_seeded_and_balanced_in_blocks():
    a, b = Schedule(7), Schedule(7)
    orders = [a.next().order for _ in range(20)]
    assert orders == [b.next().order for _ in range(20)]
    for i in range(0, 20, 2):
        assert sorted(orders[i:i + 2]) == [AB, BA]
    assert len({tuple(Schedule(s).next().order for _ in range(10)) for s in range(20)}) > 1


def test_schedule_replaces_a_dropped_pair_with_the_same_order():
    s = Schedule(0)
    first = s.next()
    s.drop(first, "rank 1 failed\ntraceback")
    again = s.next()
    assert again.order == first.order and again.index == 1
    s.keep(again)
    s.keep(s.next())
    assert s.balanced and len(s.kept) == 2 and len(s.dropped) == 1
    assert "dropped" in s.describe() and s.to_dict()["pairs"][0]["error"] == "rank 1 failed"


# -- group-sequential looks --------------------------------------------------------------------------


def test_obrien_fleming_spending_known_values():
    # alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt t): alpha = 0.025, t = 0.5 -> 2 - 2 Phi(2.2414 / 0.7071)
    assert stats.obrien_fleming_spending(0.5, 0.025) == pytest.approx(2 * (1 - 0.999238), rel=1e-3)
    assert stats.obrien_fleming_spending(1.0, 0.025) == pytest.approx(0.025)
    assert stats.obrien_fleming_spending(0.0, 0.025) == 0.0


def test_group_sequential_bounds_match_published_tables():
    # gsDesign sfLDOF, symmetric two-sided 0.05 (0.025 a side), equally spaced looks:
    # K = 5: 4.877 3.357 2.680 2.290 2.031; K = 4: 4.333 2.963 2.359 2.014.  One look: 1.960.
    five = stats.group_sequential_bounds([0.2, 0.4, 0.6, 0.8, 1.0], 0.05)
    assert five == pytest.approx([4.877, 3.357, 2.680, 2.290, 2.031], abs=2e-3)
    assert stats.group_sequential_bounds([0.25, 0.5, 0.75, 1.0], 0.05) == pytest.approx([4.333, 2.963, 2.359, 2.014],
                                                                                          abs=2e-3)
    assert stats.group_sequential_bounds([1.0], 0.05) == pytest.approx([1.960], abs=1e-3)


def test_group_sequential_bounds_hold_their_level_on_brownian_motion():
    rng = np.random.default_rng(5)
    fractions = [n / 40 for n in range(10, 41, 2)]
    bounds = np.array(stats.group_sequential_bounds(fractions, 0.01))
    steps = np.diff([0.0] + fractions)
    paths = np.cumsum(rng.normal(0, np.sqrt(steps), (200_000, len(steps))), axis=1) / np.sqrt(fractions)
    crossed = (np.abs(paths) >= bounds).any(axis=1).mean()
    assert 0.008 <= crossed <= 0.0112  # 0.01 within Monte Carlo error; unadjusted looks at 2.576 give ~3 %
    assert (np.abs(paths) >= 2.576).any(axis=1).mean() > 0.025


# -- the A/B gate's family-wise false-alarm rate, simulated through compare_arms ------------------

TRIALS, CASES = 2000, 6


class _AAArm:
    """An arm whose run centres are N(0, 0.2) log-noise around one time: A and B identical."""

    def __init__(self, rng, env):
        from llmcomm_tests.core.documents import VolumeRow
        from llmcomm_tests.judging.ab.observe import ArmRun

        self.rng, self.env, self.make = rng, env, ArmRun
        self.volume = [VolumeRow("all_reduce", "decode", "attn", 56, 57344, 57344)]

    def run(self, cfg, backend, timeout_s, ranks):
        return self.make(self.volume, True, {"op all_reduce decode /2 transfer": float(self.rng.normal(0.0, 0.2))})


def _session_false_alarms(level_per_case: float, sequential: bool, seed: int) -> int:
    """Sessions of CASES unchanged cases, each looking after every balanced pair from 6 to 20: how
    many sessions failed a case."""
    from dataclasses import replace

    from llmcomm_tests.core.envinfo import Environment
    from llmcomm_tests.judging.ab.arms import ArmEnv
    from llmcomm_tests.judging.ab.gate import compare_arms

    env = ArmEnv("/envs/python", replace(Environment.capture(), executable="/envs/python"),
                 rank_executable="/envs/python", rank_torch="2.13.0")
    rng = np.random.default_rng(seed)
    arm_a, arm_b = _AAArm(rng, env), _AAArm(rng, env)
    return sum(any(compare_arms(None, None, arm_a, arm_b, threshold=0.05, max_pairs=20, min_pairs=6,
                                level=level_per_case, sequential=sequential).failed for _ in range(CASES))
               for _ in range(TRIALS))


def _binomial_upper(p: float = 0.05) -> int:
    """The most false alarms in TRIALS sessions that a true rate of ``p`` explains (99.9 %)."""
    from scipy.stats import binom

    return int(binom.ppf(0.999, TRIALS, p))


def test_session_family_rate_holds_under_repeated_looks():
    # The gate as the session runs it: 5 % shared over the cases, spent over the looks.
    alarms = _session_false_alarms(0.05 / CASES, sequential=True, seed=11)
    assert alarms <= _binomial_upper(), f"{alarms}/{TRIALS} sessions raised a false alarm"


def test_unadjusted_looks_per_case_exceed_the_bound():
    # How the gate judged before: each case at 95 % on its own, every look as if it were the only one.
    alarms = _session_false_alarms(0.05, sequential=False, seed=11)
    assert alarms > _binomial_upper(), f"{alarms}/{TRIALS}"
