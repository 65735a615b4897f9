"""Wait versus transfer on known timelines, the Chrome trace, and budgets from a measured session."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from llmcomm_tests.runtime import arrival
from llmcomm_tests.core.documents import CallClass, RankOps

US = 1000  # ns


def rank_ops(rank: int, calls: list[tuple[CallClass, int, int]], device_timed: bool = False) -> RankOps:
    """``calls``: (class, issue ns, completion ns) in issue order."""
    classes = list(dict.fromkeys(c for c, _, _ in calls))
    cls = np.array([classes.index(c) for c, _, _ in calls], np.int32)
    start = np.array([s for _, s, _ in calls], np.int64)
    duration = np.array([(e - s) / 1e9 for _, s, e in calls])
    zeros = np.zeros(len(calls), np.int32)
    return RankOps(rank, classes, cls, zeros, zeros, start, duration, device_timed)


AR = CallClass("all_reduce", (0, 1), "float32", 256, 1024, 1024, "decode", "layer0.attn.o_proj", None)
SEND = CallClass("send", (0, 1), "float32", 256, 1024, 1024, "decode", "pp.boundary1", 1)
RECV = CallClass("recv", (0, 1), "float32", 256, 1024, 0, "decode", "pp.boundary1", 0)


def test_collective_waits_for_the_last_arrival():
    # rank 0 arrives at 0, rank 1 at 300 µs; both finish at 500 µs: rank 0 waited 300, both transferred 200.
    # Second instance: both arrive at 1000 µs and take 100 µs.
    r0 = rank_ops(0, [(AR, 0, 500 * US), (AR, 1000 * US, 1100 * US)])
    r1 = rank_ops(1, [(AR, 300 * US, 500 * US), (AR, 1000 * US, 1100 * US)])
    (w0, x0), (w1, x1) = arrival.split([r0, r1])
    assert w0 == pytest.approx([300e-6, 0.0]) and x0 == pytest.approx([200e-6, 100e-6])
    assert w1 == pytest.approx([0.0, 0.0]) and x1 == pytest.approx([200e-6, 100e-6])


def test_send_and_recv_pair_in_order_and_recv_wait_is_the_senders_lateness():
    # the receiver posts at 0 and 1 ms; the sender only sends at 800 µs and 1.5 ms
    sender = rank_ops(0, [(SEND, 800 * US, 850 * US), (SEND, 1500 * US, 1560 * US)])
    receiver = rank_ops(1, [(RECV, 0, 900 * US), (RECV, 1000 * US, 1600 * US)])
    (ws, xs), (wr, xr) = arrival.split([sender, receiver])
    assert wr == pytest.approx([800e-6, 500e-6]) and xr == pytest.approx([100e-6, 100e-6])
    assert ws == pytest.approx([0.0, 0.0]) and xs == pytest.approx([50e-6, 60e-6])


def test_unmatched_and_device_timed_calls_are_not_split():
    lonely = rank_ops(0, [(AR, 0, 100 * US)])  # its peer recorded nothing
    (w, x), = arrival.split([lonely])
    assert math.isnan(w[0]) and math.isnan(x[0])
    r0 = rank_ops(0, [(AR, 0, 500 * US)], device_timed=True)
    r1 = rank_ops(1, [(AR, 300 * US, 500 * US)], device_timed=True)
    assert all(np.isnan(a).all() for pair in arrival.split([r0, r1]) for a in pair)


def test_clock_offsets_move_ranks_onto_one_clock():
    # rank 1's clock runs 1 ms ahead: without the offset it would look 1 ms late
    r0 = rank_ops(0, [(AR, 0, 500 * US)])
    r1 = rank_ops(1, [(AR, 1300 * US, 1500 * US)])
    (w0, x0), _ = arrival.split([r0, r1], offsets_ns={1: 1000 * US})
    assert w0 == pytest.approx([300e-6]) and x0 == pytest.approx([200e-6])


def test_chrome_trace_nests_wait_and_transfer_inside_each_call(tmp_path):
    from llmcomm_tests.runtime.measure import run_engine
    from llmcomm_tests.runtime.run_config import RunConfig
    from llmcomm_tests.engine.config import PRESETS
    from llmcomm_tests.engine.layout import Layout
    from llmcomm_tests.report.trace import write_trace

    doc = run_engine(RunConfig(PRESETS["tiny"], Layout(2, 1), prompt_len=8, gen_len=3, repeats=1, warmup=0,
                             keep_records=True), timeout_s=120)
    trace = json.loads(write_trace(doc, tmp_path / "t.json").read_text())
    events = trace["traceEvents"]
    threads = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert threads == {0: "rank 0", 1: "rank 1"}
    calls = [e for e in events if e["ph"] == "X" and e["cat"] in ("prefill", "decode")]
    assert len(calls) == len(doc.records) and {c["name"] for c in calls} == {"all_reduce", "broadcast", "gather"}
    assert all(c["args"]["bytes"] > 0 and c["args"]["site"] for c in calls)
    waits = [e for e in events if e["name"] == "wait"]
    transfers = [e for e in events if e["name"] == "transfer"]
    assert len(waits) == len(transfers) == len(calls)  # one host: every call split
    for call, wait, transfer in zip(calls, waits, transfers):
        assert wait["ts"] == call["ts"] and transfer["ts"] == pytest.approx(wait["ts"] + wait["dur"])
        assert wait["dur"] + transfer["dur"] == pytest.approx(call["dur"], abs=1e-3)


def test_budgets_suggest_is_a_stated_margin_over_the_measured_p99():
    from types import SimpleNamespace

    from llmcomm_tests.commands.budgets import parse_margin, suggest
    from llmcomm_tests.core.documents import CommMetrics, Distribution, LatencyMetrics

    def run(tpot):
        m = LatencyMetrics(Distribution([0.1, 0.2]), Distribution(tpot), Distribution([1.0]), Distribution([]), 1.0)
        c = CommMetrics(Distribution([0.01]), Distribution([0.5]), Distribution([]), Distribution([]), 2048.0, 0,
                        Distribution([0.002]))
        return SimpleNamespace(metrics=m, comm=c)

    items = [SimpleNamespace(spec="s", run=run([0.010, 0.012])), SimpleNamespace(spec="s", run=run([0.030]))]
    report = SimpleNamespace(items=items, hardware="cpu-loopback", env={"host": "h", "torch": "2.13"})
    text = suggest(report, 2.0)
    assert "  hardware: cpu-loopback" in text
    assert "  tpot: {p99: 60ms}" in text  # 2 x the worst case's p99 (30 ms)
    assert "  ttft: {p99: 400ms}" in text and "  wait_per_token: {p99: 4ms}" in text
    assert "  bytes_per_token: {max: 2048}" in text and "--margin 2" in text
    with pytest.raises(ValueError, match="at most 3"):
        parse_margin(5.0)


def skewed_clock_offsets(ctx, skew_ns: int):
    """Rank 1's clock reads ``skew_ns`` ahead: the estimate must find it, within its stated error."""
    import time

    from llmcomm_tests.runtime.clocks import estimate_offsets

    clock = (lambda: time.perf_counter_ns() + skew_ns) if ctx.rank == 1 else time.perf_counter_ns
    return estimate_offsets(clock=clock)


def test_clock_offsets_are_estimated_with_their_error():
    from llmcomm_tests.runtime.launch import launch

    offsets = launch(skewed_clock_offsets, (5_000_000,), world_size=2, timeout_s=120)[0]
    offset, error = offsets[1]
    assert offsets[0] == (0, 0) and 0 < error < 5_000_000
    assert abs(offset - 5_000_000) <= error + 50_000  # within the half round trip (+ scheduling slop)
