"""The checks on their own: volume rows, the binomial statement behind latency bounds, budgets."""

import math

import pytest

from types import SimpleNamespace

from llmcomm_tests.judging.checks import budget_rows, latency_rows, volume_rows
from llmcomm_tests.core.documents import (CommMetrics, Distribution, LatencyMetrics, LatencySummary, OpSummary, VolumeRow)
from llmcomm_tests.report.table import format_table
from llmcomm_tests.spec import Budget, Budgets, LatencyTolerance
from llmcomm_tests.core.stats import binomial_cdf, median_ci


@pytest.mark.parametrize("k, n, p", [(15, 20, 0.9), (0, 5, 0.9), (8, 10, 0.9), (3, 7, 0.5)])
def test_binomial_cdf_matches_the_exact_sum(k, n, p):
    exact = sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))
    assert binomial_cdf(k, n, p) == pytest.approx(exact, rel=1e-9)


def test_binomial_cdf_does_not_underflow_on_large_classes():
    """560 samples, 99 % inside: clearly consistent with 90 % (q**n would underflow to 0 → a false FAIL)."""
    assert binomial_cdf(554, 560, 0.9) > 0.99
    assert binomial_cdf(490, 560, 0.9) < 0.05  # 87.5 % of 560: significantly below 90 %
    assert binomial_cdf(560, 560, 0.9) == 1.0


@pytest.mark.parametrize("n, confidence, ranks", [(6, 0.95, (1, 6)), (10, 0.95, (2, 9)), (20, 0.95, (6, 15)),
                                                   (5, 0.90, (1, 5)), (5, 0.95, None), (10, 0.999, None)])
def test_median_interval_is_the_textbook_order_statistics(n, confidence, ranks):
    """Known values (1-based ranks): n=10 at 95 % is [x(2), x(9)]; 5 samples cannot give 95 %
    (their full range covers the median with 93.75 %)."""
    assert median_ci(list(range(1, n + 1)), confidence) == ranks


def test_median_interval_covers_at_least_its_confidence():
    import random

    rng = random.Random(7)
    for n in (8, 10, 35):
        trials = 4000
        covered = 0
        for _ in range(trials):
            lo, hi = median_ci([rng.random() for _ in range(n)], 0.95)
            covered += lo <= 0.5 <= hi  # the true median of U(0, 1)
        assert covered / trials >= 0.94, (n, covered / trials)  # 95 % less sampling noise (sd 0.34 %)


def test_volume_rows_name_every_difference():
    measured = [VolumeRow("all_reduce", "decode", "attn", 8, 16, 16), VolumeRow("send", "decode", "pp.tokens", 1, 8, 8)]
    predicted = [VolumeRow("all_reduce", "decode", "attn", 4, 8, 8), VolumeRow("gather", "decode", "lm_head", 2, 4, 2)]
    rows = {r.name: r for r in volume_rows(measured, predicted)}
    assert rows["all_reduce decode attn"].detail == "count 8 != 4, bytes 16 != 8, wire_bytes 16 != 8"
    assert rows["send decode pp.tokens"].detail == "not in the model"
    assert rows["gather decode lm_head"].detail == "not recorded"
    assert all(r.verdict == "fail" for r in rows.values())
    assert [r.verdict for r in volume_rows(predicted, predicted)] == ["pass", "pass"]
    assert (rows["all_reduce decode attn"].measured, rows["all_reduce decode attn"].model) == (16, 8)


def _summary(transfers):
    n = len(transfers)
    return OpSummary("all_reduce", "decode", "attn", [0, 1], 1024, "", None, n, 1024 * n, 1024 * n,
                     LatencySummary.of(transfers), LatencySummary.of([0.0] * n), LatencySummary.of(transfers))


def test_transfer_centre_and_tail_fail_for_their_own_reasons(monkeypatch):
    """Band [0.5 ms, 2 ms] around a 1 ms model, tail allowance 4 ms at p90."""
    import random

    import llmcomm_tests.judging.checks as checks

    monkeypatch.setattr(checks, "class_transfer", lambda profile, op, ranks, nbytes, role, world_size: (1e-3, 0.5e-3, 2e-3, 0.9, 4e-3))
    tol = LatencyTolerance(inside_fraction=0.9)
    rng = random.Random(1)
    typical = [rng.uniform(0.8e-3, 1.2e-3) for _ in range(200)]
    ok = latency_rows([_summary(typical)], None, tol)
    assert [(r.name, r.verdict) for r in ok] == [("all_reduce decode attn /2 transfer centre", "pass"),
                                                 ("all_reduce decode attn /2 transfer p90", "pass")]
    assert (ok[0].model, ok[0].low, ok[0].high) == (1e-3, 0.5e-3, 2e-3) and ok[1].budget == 4e-3
    wider_tail = latency_rows([_summary(typical)], None, LatencyTolerance(0.9, slack=0.5, tail_slack=1.0))
    assert (wider_tail[0].low, wider_tail[0].high, wider_tail[1].budget) == (0.25e-3, 3e-3, 8e-3)
    slow_centre = latency_rows([_summary([x + 2e-3 for x in typical])], None, tol)  # a planted 2 ms delay
    assert slow_centre[0].verdict == "fail" and slow_centre[0].detail.startswith("above the band")
    assert slow_centre[1].verdict == "pass"  # 3 ms is still under the 4 ms allowance
    fat_tail = latency_rows([_summary(typical[:160] + [10e-3] * 40)], None, tol)  # 20 % stragglers
    assert fat_tail[0].verdict == "pass" and fat_tail[1].verdict == "fail" and "80% of 200" in fat_tail[1].detail
    few = latency_rows([_summary(typical[:2])], None, tol)
    assert [r.verdict for r in few] == ["n/a", "n/a"]


def test_latency_tests_share_the_sessions_significance(monkeypatch):
    """12 transfers all above the band fail a case judged alone (one class, two tests: a 97.5 %
    interval, [x(2), x(11)]); in a session of 100 timed cases the interval needs 99.975 %, which 12
    samples cannot give (their full range covers the median with 99.95 %)."""
    import llmcomm_tests.judging.checks as checks

    monkeypatch.setattr(checks, "class_transfer", lambda profile, op, ranks, nbytes, role, world_size: (1e-3, 0.5e-3, 2e-3, 0.9, 4e-3))
    slow = [3e-3 + i * 1e-5 for i in range(12)]
    alone = latency_rows([_summary(slow)], None, LatencyTolerance(0.9))
    assert alone[0].verdict == "fail" and "[97.5% CI 3.010ms, 3.100ms]" in alone[0].detail
    shared = latency_rows([_summary(slow)], None, LatencyTolerance(0.9), timed_cases=100)
    assert shared[0].verdict == "n/a" and shared[0].detail == "12 samples: too few for a 99.98% interval of the median"
    many = latency_rows([_summary(slow * 20)], None, LatencyTolerance(0.9), timed_cases=300)
    assert many[0].verdict == "fail" and "[99.992% CI" in many[0].detail  # not "100.0%": one decimal would round it


def test_latency_summary_quantiles_past_the_sample_cap_stay_within_a_bucket():
    import random

    rng = random.Random(3)
    values = [rng.lognormvariate(-7, 0.5) for _ in range(20_000)]
    summary = LatencySummary.of(values)
    assert not summary.exact and len(summary.samples) == 512 and summary.count == 20_000
    for q in (0.5, 0.9, 0.99):
        exact = sorted(values)[int(q * (len(values) - 1))]
        assert summary.quantile(q) == pytest.approx(exact, rel=0.025)
    merged = summary.merge(LatencySummary.of(values[:100]))
    assert merged.count == 20_100 and len(merged.samples) == 512


def _doc(ttft, tpot, e2e, comm_share, bytes_per_token):
    metrics = LatencyMetrics(Distribution(ttft), Distribution(tpot), Distribution(e2e), Distribution([]), None)
    comm = CommMetrics(Distribution([0.01] * 3), Distribution(comm_share), Distribution([]), Distribution([]),
                       bytes_per_token, 0)
    return SimpleNamespace(metrics=metrics, comm=comm, ops=[])


def test_budgets_pass_fail_and_not_applicable():
    doc = _doc([0.1, 0.2, 0.3], [0.01] * 3, [1.0] * 3, [0.5] * 3, 2048)
    budgets = Budgets((Budget("ttft", p99=0.25, hardware="cpu-loopback"), Budget("tpot", p50=0.1, hardware="cpu-loopback"),
                       Budget("e2e", p99=0.1, hardware="h100-nvlink4"), Budget("bytes_per_token", max=1024),
                       Budget("op_latency", p99=1e-3, hardware="cpu-loopback", op="gather")))
    rows = {r.name: r for r in budget_rows(budgets, doc, "cpu-loopback")}
    assert rows["ttft p99"].verdict == "fail" and rows["ttft p99"].measured == pytest.approx(0.298)  # interpolated
    assert rows["ttft p99"].budget == 0.25 and rows["ttft p99"].unit == "s"
    assert rows["tpot p50"].verdict == "pass"
    assert rows["e2e p99"].verdict == "n/a" and "written for h100-nvlink4" in rows["e2e p99"].detail
    assert rows["bytes_per_token max"].verdict == "fail"
    assert rows["op_latency.gather p99"].verdict == "n/a"  # no gather ran
    assert rows["ttft p99"].detail.startswith("p99 298.000ms > 250.000ms")
    assert "p99 <= 250.000ms" in format_table([rows["ttft p99"]])


def test_latency_rows_state_their_level_and_the_slowdown_they_catch(monkeypatch):
    """Each row says the level it was judged at and the smallest slowdown of every transfer it
    would have caught: slowing the same transfers by a bit more than that fails the row, by a bit
    less does not."""
    import random

    import llmcomm_tests.judging.checks as checks

    monkeypatch.setattr(checks, "class_transfer", lambda profile, op, ranks, nbytes, role, world_size: (1e-3, 0.5e-3, 2e-3, 0.9, 4e-3))
    rng = random.Random(2)
    typical = [rng.uniform(0.8e-3, 1.2e-3) for _ in range(200)]
    tol = LatencyTolerance(0.9)
    centre, tail = latency_rows([_summary(typical)], None, tol, timed_cases=4)
    assert centre.level == tail.level == pytest.approx(0.05 / 4 / 2)
    assert f"level {centre.level:.2g}: detects >= {centre.detectable:.1%} slower" in centre.detail
    assert f"level {tail.level:.2g}: detects >= {tail.detectable:.1%} slower" in tail.detail
    for row, index in ((centre, 0), (tail, 1)):
        assert 0 < row.detectable < 10
        for factor, verdict in ((1.01, "fail"), (0.99, "pass")):
            scaled = [x * (1 + row.detectable) * factor for x in typical]
            assert latency_rows([_summary(scaled)], None, tol, timed_cases=4)[index].verdict == verdict, (row.name, factor)
    # the session's share: half of 5 % when stored baselines are judged too
    halved = latency_rows([_summary(typical)], None, tol, timed_cases=4, session_level=0.025)
    assert halved[0].level == pytest.approx(centre.level / 2) and halved[0].detectable > centre.detectable


def test_session_levels_divide_one_rate():
    from llmcomm_tests.judging.levels import divide

    alone = divide(ab=False, baseline_compare=False, timed_cases=3, judged_cases=4)
    assert (alone.latency, alone.baseline, alone.ab) == (0.05, 0.0, 0.0)
    both = divide(ab=False, baseline_compare=True, timed_cases=3, judged_cases=4)
    assert both.latency + both.baseline == pytest.approx(0.05) and both.baseline_case == pytest.approx(0.025 / 4)
    ab = divide(ab=True, baseline_compare=True, judged_cases=12)
    assert (ab.latency, ab.baseline) == (0.0, 0.0) and ab.ab_case == pytest.approx(0.05 / 12)
