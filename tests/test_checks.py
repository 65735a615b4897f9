"""The checks on their own: volume rows, the binomial statement behind latency bounds, budgets."""

import math

import pytest

from types import SimpleNamespace

from llmcomm_tests.checks import budget_rows, latency_rows, volume_rows
from llmcomm_tests.documents import (CommMetrics, Distribution, LatencyMetrics, LatencySummary, OpSummary,
                                     VolumeRow)
from llmcomm_tests.report.table import format_table
from llmcomm_tests.spec import Budget, Budgets, LatencyTolerance
from llmcomm_tests.stats import binomial_cdf


@pytest.mark.parametrize("k, n, p", [(15, 20, 0.9), (0, 5, 0.9), (8, 10, 0.9), (3, 7, 0.5)])
def test_binomial_cdf_matches_the_exact_sum(k, n, p):
    exact = sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k + 1))
    assert binomial_cdf(k, n, p) == pytest.approx(exact, rel=1e-9)


def test_binomial_cdf_does_not_underflow_on_large_classes():
    """560 samples, 99 % inside: clearly consistent with 90 % (q**n would underflow to 0 → a false FAIL)."""
    assert binomial_cdf(554, 560, 0.9) > 0.99
    assert binomial_cdf(490, 560, 0.9) < 0.05  # 87.5 % of 560: significantly below 90 %
    assert binomial_cdf(560, 560, 0.9) == 1.0


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


class _Profile:
    """Bounds [1 ms, 2 ms] for every op, as a profile would give them."""

    def tier_of(self, ranks):
        return "intra"


def _summary(durations):
    return OpSummary("all_reduce", "decode", "attn", [0, 1], 1024, "", None, len(durations), 1024 * len(durations),
                     1024 * len(durations), LatencySummary.of(durations))


def test_latency_rows_judge_the_share_inside(monkeypatch):
    import llmcomm_tests.checks as checks

    monkeypatch.setattr(checks, "class_bounds", lambda profile, op, ranks, nbytes: (1e-3, 2e-3, 1.5e-3))
    tol = LatencyTolerance(inside_fraction=0.9)
    inside_mostly = _summary([1.5e-3] * 290 + [5e-3] * 10)  # 96.7 % inside
    outside_often = _summary([1.5e-3] * 240 + [5e-3] * 60)  # 80 % inside
    below_floor = _summary([1.5e-3] * 9 + [1e-4])
    (ok,) = latency_rows([inside_mostly], _Profile(), tol)
    (bad,) = latency_rows([outside_often], _Profile(), tol)
    (low,) = latency_rows([below_floor], _Profile(), tol)
    assert ok.verdict == "pass" and bad.verdict == "fail"
    assert (ok.low, ok.high) == (1e-3, 2e-3) and ok.n == 300 and "97% of 300 inside" in ok.detail
    assert "1 below the physical floor" in low.detail


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
