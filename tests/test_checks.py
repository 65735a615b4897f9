"""The checks on their own: volume rows, the binomial statement behind latency bounds, budgets."""

import math

import pytest

from llmcomm_tests.checks import binomial_cdf, budget_rows, latency_rows, volume_rows
from llmcomm_tests.spec import Budget, Budgets, LatencyTolerance


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
    measured = [{"op": "all_reduce", "phase": "decode", "site": "attn", "count": 8, "bytes": 16, "wire_bytes": 16},
                {"op": "send", "phase": "decode", "site": "pp.tokens", "count": 1, "bytes": 8, "wire_bytes": 8}]
    predicted = [{"op": "all_reduce", "phase": "decode", "site": "attn", "count": 4, "bytes": 8, "wire_bytes": 8},
                 {"op": "gather", "phase": "decode", "site": "lm_head", "count": 2, "bytes": 4, "wire_bytes": 2}]
    rows = {r["name"]: r for r in volume_rows(measured, predicted)}
    assert rows["all_reduce decode attn"]["detail"] == "count 8 != 4, bytes 16 != 8, wire_bytes 16 != 8"
    assert rows["send decode pp.tokens"]["detail"] == "not in the model"
    assert rows["gather decode lm_head"]["detail"] == "not recorded"
    assert all(r["verdict"] == "fail" for r in rows.values())
    assert [r["verdict"] for r in volume_rows(predicted, predicted)] == ["pass", "pass"]


class _Profile:
    """Bounds [1 ms, 2 ms] for every op, as a profile would give them."""

    def tier_of(self, ranks):
        return "intra"


def _op(duration, rank=0):
    return {"op": "all_reduce", "phase": "decode", "site": "layer0.attn.o_proj", "group": [0, 1], "rank": rank,
            "bytes": 1024, "wire_bytes": 1024, "duration_s": duration}


def test_latency_rows_judge_the_share_inside(monkeypatch):
    import llmcomm_tests.analytic.accuracy as accuracy

    monkeypatch.setattr(accuracy, "bounds_for_record", lambda profile, rec, layout=None: (1e-3, 2e-3, 1.5e-3))
    tol = LatencyTolerance(inside_fraction=0.9)
    inside_mostly = [_op(1.5e-3)] * 290 + [_op(5e-3)] * 10  # 96.7 % inside
    outside_often = [_op(1.5e-3)] * 240 + [_op(5e-3)] * 60  # 80 % inside
    below_floor = [_op(1.5e-3)] * 9 + [_op(1e-4)]
    (ok,) = latency_rows(inside_mostly, _Profile(), tol)
    (bad,) = latency_rows(outside_often, _Profile(), tol)
    (low,) = latency_rows(below_floor, _Profile(), tol)
    assert ok["verdict"] == "pass" and bad["verdict"] == "fail"
    assert ok["bound"] == [1e-3, 2e-3] and ok["n"] == 300 and "97% of 300 inside" in ok["detail"]
    assert "1 below the physical floor" in low["detail"]


def test_budgets_pass_fail_and_not_applicable():
    doc = {"metrics": {"samples": {"ttft_s": [0.1, 0.2, 0.3], "tpot_s": [0.01] * 3, "e2e_s": [1.0] * 3}, "itl_s": []},
           "comm": {"samples": {"comm_share": [0.5] * 3, "comm_time_per_token_s": [0.01] * 3}, "bytes_per_token": 2048},
           "ops": []}
    budgets = Budgets((Budget("ttft", p99=0.25, hardware="cpu-loopback"), Budget("tpot", p50=0.1, hardware="cpu-loopback"),
                       Budget("e2e", p99=0.1, hardware="h100-nvlink4"), Budget("bytes_per_token", max=1024),
                       Budget("op_latency", p99=1e-3, hardware="cpu-loopback", op="gather")))
    rows = {r["name"]: r for r in budget_rows(budgets, doc, "cpu-loopback")}
    assert rows["ttft"]["verdict"] == "fail" and rows["ttft"]["detail"].startswith("p99 298.000 ms > 250.000 ms")  # interpolated
    assert rows["tpot"]["verdict"] == "pass"
    assert rows["e2e"]["verdict"] == "n/a" and "written for h100-nvlink4" in rows["e2e"]["detail"]
    assert rows["bytes_per_token"]["verdict"] == "fail"
    assert rows["op_latency.gather"]["verdict"] == "n/a"  # no gather ran
