"""analytic/accuracy.py: recorded op → latency-model terms, bounds per record, per-class accuracy,
spread re-measured on runs; and the robust line fit of the calibration."""

from __future__ import annotations

import math

import pytest

from llmcomm_tests.analytic import latency
from types import SimpleNamespace

from llmcomm_tests.analytic.accuracy import (WAITING, accuracy_rows, bounds_for_record, fit_spread, instance, role_of, span_of, summary, waiting_reason)
from llmcomm_tests.calibration.fit import fit_line
from llmcomm_tests.analytic.hardware import load_profile, profile_from_dict
from llmcomm_tests.analytic.volume import op_instances
from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.core.documents import OpRecord
from llmcomm_tests.engine.layout import Layout


def rec(op, rank=0, group=(0, 1), nbytes=1024, wire=None, site="layer0.attn.o_proj", phase="decode", dur=1e-3,
        peer=None):
    return OpRecord(rank, 0, op, list(group), "float32", nbytes // 4, nbytes, nbytes if wire is None else wire, phase,
                    1, site, 0, dur, peer)


def record_instance(r):
    """The model's view of one record, as checks and the accuracy rows take it."""
    role = role_of(r.op, r.bytes, r.wire_bytes)
    found = instance(r.op, span_of(r.op, r.rank, r.group, r.peer), r.bytes)
    return None if found is None else {**found, "role": role, "waiting": waiting_reason(r.op, role)}


def unit_profile(**fit):
    f = {"alpha_s": 1e-5, "beta_Bps": 1e9, **fit}
    tier = {"peak_Bps": 2e9, "alpha_min_s": 1e-6, "k_hi": 2.0, "slack_s": 0.0, "ops": {"default": {"default": f}}}
    return profile_from_dict({"name": "unit", "ranks_per_node": 2, "compute": {"peak_flops": 1e12, "hbm_Bps": 1e11},
                              "tiers": {"intra": tier, "inter": tier}})


def test_msg_bytes_convention_and_roles():
    ag = record_instance(rec("all_gather", group=(0, 1, 2, 3), nbytes=512, wire=1536))
    assert (ag["op"], ag["group_size"], ag["msg_bytes"], ag["waiting"]) == ("all_gather", 4, 2048, None)
    ar = record_instance(rec("all_reduce", group=(0, 1), nbytes=1024, wire=1024))
    assert (ar["msg_bytes"], ar["group_size"]) == (1024, 2)
    root = record_instance(rec("gather", rank=0, nbytes=2048, wire=0, site="lm_head"))
    peer = record_instance(rec("gather", rank=1, nbytes=2048, wire=2048, site="lm_head"))
    assert root["msg_bytes"] == peer["msg_bytes"] == 4096  # the gathered total
    assert root["role"] == "root" and root["waiting"] == WAITING[("gather", "root")]
    assert peer["role"] == "peer" and peer["waiting"] is None
    b_root = record_instance(rec("broadcast", rank=0, nbytes=8, wire=8, site="tokens.broadcast"))
    b_peer = record_instance(rec("broadcast", rank=1, nbytes=8, wire=0, site="tokens.broadcast"))
    assert b_root["waiting"] is None and b_peer["waiting"] is not None
    send = record_instance(rec("send", rank=0, group=(0, 1, 2, 3), nbytes=512, site="pp.boundary1", peer=2))
    recv = record_instance(rec("recv", rank=2, group=(0, 1, 2, 3), nbytes=512, wire=0, site="pp.boundary1", peer=0))
    assert (send["op"], send["group_size"], send["msg_bytes"], send["ranks"]) == ("send_recv", 2, 512, [0, 2])
    assert recv["ranks"] == [0, 2] and recv["waiting"] is not None
    tokens = record_instance(rec("recv", rank=0, group=(0, 1, 2, 3), nbytes=8, wire=0, site="pp.tokens", peer=2))
    assert tokens["ranks"] == [0, 2]  # the pair the recorder saw
    assert record_instance(rec("send", rank=1, nbytes=8))["ranks"] == [1]  # peer unknown: the rank alone
    assert record_instance(rec("barrier", nbytes=0)) is None


def test_bounds_for_record_tiers_and_waiting():
    p = unit_profile()
    lower, upper, pred = bounds_for_record(p, rec("all_reduce", group=(0, 1), nbytes=1000))
    assert pred == pytest.approx(latency.hockney_time("all_reduce", 2, 1000, 1e-5, 1e9))
    assert lower <= pred <= upper == pytest.approx(2 * pred)
    # a boundary send from rank 1 to rank 3 crosses nodes with ranks_per_node 2: the inter tier
    send = rec("send", rank=1, group=(0, 1, 2, 3), nbytes=1000, site="pp.boundary1", peer=3)
    assert p.tier_of(record_instance(send)["ranks"]) == "inter"
    assert bounds_for_record(p, send) is not None
    assert bounds_for_record(p, rec("recv", wire=0, site="pp.boundary1")) is None
    assert bounds_for_record(p, rec("all_reduce", group=(0,))) is None  # a group of one issues nothing


def doc_of(records):
    return SimpleNamespace(records=records)


def test_accuracy_rows_counts_and_shares():
    p = unit_profile()
    pred = latency.hockney_time("all_reduce", 2, 1000, 1e-5, 1e9)
    durations = [pred, pred * 1.5, pred * 3.0, pred * 0.5e-3]  # inside, inside, above, below the floor
    records = [rec("all_reduce", nbytes=1000, dur=d) for d in durations]
    records += [rec("gather", rank=0, nbytes=500, wire=0, site="lm_head", dur=5e-3)]
    rows = accuracy_rows([doc_of(records)], p)
    ar = next(r for r in rows if r["op"] == "all_reduce")
    assert (ar["n"], ar["inside"], ar["above_upper"], ar["below_lower"]) == (4, 2, 1, 1)
    assert ar["median_predicted_s"] == pytest.approx(pred)
    # |pred − meas| / meas per record: 0, 1/3, 2/3, ~2000 → median 1/2
    assert ar["median_rel_err"] == pytest.approx(0.5)
    assert ar["medians_rel_err"] == pytest.approx(abs(pred - ar["median_measured_s"]) / ar["median_measured_s"])
    g = next(r for r in rows if r["op"] == "gather")
    assert g["waiting"] and g["median_predicted_s"] is None and rows[-1] is g  # waiting classes last
    s = summary(rows)
    assert (s["records"], s["inside"], s["waiting_records"]) == (4, 2, 1)


def test_fit_spread_sets_k_hi_from_records_and_keeps_the_floor():
    p = unit_profile()
    pred = latency.hockney_time("all_reduce", 2, 1000, 1e-5, 1e9)
    ratios = [1.0 + i / 10 for i in range(101)]  # 1.0 … 11.0
    docs = [doc_of([rec("all_reduce", nbytes=1000, dur=pred * r) for r in ratios] +
                   [rec("send", rank=0, nbytes=8, site="pp.tokens", dur=0.4e-6, peer=1)])]
    q, notes = fit_spread(p, docs, quantile=1.0)
    assert q.fit("all_reduce", 2).k_hi == pytest.approx(11.0)
    assert q.fit("all_reduce", 2).quality["k_hi_records"] == 101
    assert q.fit("all_gather", 2).k_hi is None  # untouched: no records
    # the 0.4 µs send beat alpha_min 1 µs: the floor moved under it
    assert q.tier("intra").alpha_min_s < 0.4e-6
    lower, upper, _ = bounds_for_record(q, docs[0].records[-1])
    assert lower <= 0.4e-6 <= upper
    assert any("alpha_min" in n for n in notes)


def test_fit_line_ignores_a_minority_regime():
    xs = [2.0 ** k for k in range(3, 21)]
    ys = [5e-3 + x / 1e9 for x in xs]
    ys[0], ys[1] = 0.45e-3, 0.86e-3  # two sizes measured in another scheduling regime
    a, b = fit_line(xs, ys)
    assert a == pytest.approx(5e-3, rel=0.02) and b == pytest.approx(1e-9, rel=0.05)
    # clean data: exact
    a, b = fit_line(xs, [1e-4 + x / 2e9 for x in xs])
    assert a == pytest.approx(1e-4, rel=1e-6) and b == pytest.approx(1 / 2e9, rel=1e-6)


def test_every_real_record_maps_to_an_op_instance():
    """The record → msg_bytes mapping is volume.op_instances' convention, on a real TP×PP run."""
    from llmcomm_tests.runtime.measure import run_engine
    from llmcomm_tests.runtime.run_config import RunConfig

    tiny, layout = PRESETS["tiny"], Layout(2, 2)
    doc = run_engine(RunConfig(tiny, layout, batch=2, prompt_len=8, gen_len=3, repeats=1, warmup=0, keep_records=True),
                   timeout_s=120)
    model = {(i["op"], i["phase"], i["group_size"], i["msg_bytes"]) for i in op_instances(tiny, layout, 2, 8, 3)}
    for r in doc.records:
        inst = record_instance(r)
        assert (inst["op"], r.phase, inst["group_size"], inst["msg_bytes"]) in model, r
    rows = accuracy_rows([doc], load_profile("cpu-loopback"))
    assert {r["op"] for r in rows} == {"all_reduce", "all_gather", "broadcast", "gather", "send", "recv"}
    assert all(r["below_lower"] == 0 for r in rows if r["waiting"] is None)  # the floor is a floor
    assert all(math.isfinite(r["median_measured_s"]) for r in rows)
