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
