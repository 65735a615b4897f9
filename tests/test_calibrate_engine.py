"""Engine-conditions calibration: the fit, band and tail math on synthetic rows (pure, fast), the
CLI on saved rows, and one small real sweep whose transfers must sit inside the call times."""

from __future__ import annotations

import json

import pytest

from llmcomm_tests.analytic import latency
from llmcomm_tests.analytic.hardware import load_profile
from llmcomm_tests.calibration.fit import BAND_LIMITS, fit_engine_conditions
from llmcomm_tests.commands.calibrate import main as calibrate_main
from llmcomm_tests.core.stats import percentile

ALPHA, BETA = 100e-6, 2e9  # all_reduce over 2: T = 2α + M/β
SIZES = [8, 1024, 32768, 262144]
SPREAD = [0.5, 0.8, 0.9, 1.0, 1.0, 1.1, 1.25, 2.0, 4.0]  # multiplicative noise, median exactly 1


def _model(op: str, group: int, size: int) -> float:
    return latency.hockney_time(op, group, size, ALPHA, BETA)


def _rows(op="all_reduce", group=2, world=2, launch_factors=(0.8, 1.0, 1.25), roles=("",), role_factor=None):
    """Rows as bench_comm.engine_sweep writes them: per launch, every sample = model × the launch's
    factor × the role's factor × a spread whose median is 1."""
    role_factor = role_factor or {}
    rows = []
    for launch, factor in enumerate(launch_factors):
        for size in SIZES:
            transfers, which = [], []
            for role in roles:
                for e in SPREAD:
                    transfers.append(_model(op, group, size) * factor * role_factor.get(role, 1.0) * e)
                    which.append(role)
            rows.append({"op": op, "world_size": world, "group_size": group, "bytes": size, "compute_ms": 0.3,
                         "launch": launch, "cores": 2, "times_s": transfers, "transfer_s": transfers,
                         "transfer_role": which})
    return rows


def test_fit_band_and_tail_from_launch_medians():
    margin = 1.25
    profile = fit_engine_conditions(_rows(), "t", source="synthetic", margin=margin)
    fit = profile.fit("all_reduce", 2)
    assert fit.alpha_s == pytest.approx(ALPHA, rel=1e-3)  # the pooled per-size medians lie on the model
    assert fit.beta_Bps == pytest.approx(BETA, rel=1e-3)
    assert fit.band_lo == pytest.approx(0.8 / margin)  # the slowest and fastest launch, widened
    assert fit.band_hi == pytest.approx(1.25 * margin)
    ratios = [f * e for f in (0.8, 1.0, 1.25) for _ in SIZES for e in SPREAD]
    assert fit.tail_k == pytest.approx(percentile(ratios, 90) * margin)
    assert fit.quality["launches"] == 3 and fit.quality["margin"] == margin
    assert fit.quality["launch_median_ratio"] == [pytest.approx(0.8), pytest.approx(1.25)]
    # the band the latency check reads
    model, low, high, q, tail = latency.transfer_band(profile, "all_reduce", 2, 1024)
    assert model == pytest.approx(_model("all_reduce", 2, 1024), rel=1e-3)
    assert (low / model, high / model, q) == (pytest.approx(0.64), pytest.approx(1.5625), 0.9)
    assert tail / model == pytest.approx(fit.tail_k)


def test_band_covers_every_role_and_world():
    rows = _rows("broadcast", roles=("root", "peer"), launch_factors=(1.0,), role_factor={"root": 2.0, "peer": 0.5})
    rows += [{**r, "world_size": 4, "launch": 1} for r in _rows("broadcast", launch_factors=(1.5,), roles=("root",))]
    fit = fit_engine_conditions(rows, "t", margin=1.0).fit("broadcast", 2)
    medians = fit.quality["launch_medians"]
    assert set(medians) == {"0/w2/root", "0/w2/peer", "1/w4/root"}
    # root 2× and peer 0.5× the same line: 4× apart, both inside the band
    assert medians["0/w2/root"] / medians["0/w2/peer"] == pytest.approx(4.0, rel=1e-3)
    assert fit.band_lo == pytest.approx(min(medians.values()), rel=1e-3)
    assert fit.band_hi == pytest.approx(max(medians.values()), rel=1e-3)
    assert fit.band_lo < 1 < fit.band_hi


def test_band_is_clipped_to_three_times_the_model_with_a_note():
    profile = fit_engine_conditions(_rows(launch_factors=(0.2, 1.0, 5.0)), "t", margin=1.25)
    fit = profile.fit("all_reduce", 2)
    assert (fit.band_lo, fit.band_hi) == (pytest.approx(BAND_LIMITS[0]), pytest.approx(BAND_LIMITS[1]))
    assert any("clipped" in n and "all_reduce[2]" in n for n in profile.notes)
    assert fit.tail_k >= fit.band_hi


def test_send_recv_pools_every_configuration_and_defaults_follow_the_largest_group():
    rows = _rows("send_recv", group=2, world=2, roles=("send", "recv"))
    rows += [{**r, "world_size": 4, "group_size": 4} for r in _rows("send_recv", group=2, world=4)]
    rows += _rows("all_reduce", group=4, world=4)
    profile = fit_engine_conditions(rows, "t", margin=1.1)
    sr = profile.fit("send_recv", 2)
    assert sr.quality["worlds"] == [2, 4]
    assert profile.tier("intra").ops["all_reduce"]["default"] == profile.fit("all_reduce", 4)
    assert profile.fit("all_reduce", 4).band_lo is not None


def test_variants_for_named_ops_only():
    """--variants-for send_recv: the handoff gets a fit per world size and role (an idle receiver at
    4 ranks on 2 cores is woken late: 4x here), the collectives keep one fit."""
    rows = _rows("send_recv", world=2, roles=("send", "recv"))
    rows += [{**r, "launch": 9} for r in _rows("send_recv", world=4, roles=("send", "recv"), launch_factors=(4.0,))]
    rows += _rows("broadcast", roles=("root", "peer"))
    profile = fit_engine_conditions(rows, "t", margin=1.0, variants=("send_recv",))
    assert profile.fit("broadcast", 2).variants is None
    sr = profile.fit("send_recv", 2)
    assert {"w2", "w4", "w2/recv", "w4/recv", "send", "recv"} <= set(sr.variants)
    w2, w4 = profile.fit("send_recv", 2, role="recv", world_size=2), profile.fit("send_recv", 2, role="recv", world_size=4)
    assert latency.hockney_time("send_recv", 2, 1024, w4.alpha_s, w4.beta_Bps) == pytest.approx(
        4 * latency.hockney_time("send_recv", 2, 1024, w2.alpha_s, w2.beta_Bps), rel=1e-2)
    assert fit_engine_conditions(rows, "t", margin=1.0, variants=False).fit("send_recv", 2).variants is None


def test_refuses_rows_without_transfers_and_a_margin_below_one():
    rows = _rows()
    with pytest.raises(ValueError, match="margin"):
        fit_engine_conditions(rows, "t", margin=0.9)
    with pytest.raises(ValueError, match="transfer_s"):
        fit_engine_conditions([{k: v for k, v in r.items() if k != "transfer_s"} for r in rows], "t")


def test_a_planted_slowdown_leaves_the_band():
    """The band is evidence only if it can fail: a transfer 3× the calibrated centre is outside."""
    profile = fit_engine_conditions(_rows(), "t", margin=1.25)
    model, low, high, _, tail = latency.transfer_band(profile, "all_reduce", 2, 1024)
    assert low <= model <= high
    assert 3 * model > high and 3 * model < tail * 2
    assert model / 3 < low


def test_cli_engine_conditions_from_saved_rows(tmp_path, capsys):
    path = tmp_path / "ec.json"
    path.write_text(json.dumps({"rows": _rows() + _rows("gather", roles=("root", "peer"))}))
    out = tmp_path / "p.yaml"
    assert calibrate_main(["--engine-conditions", "--rows", str(path), "--out", str(out), "--name", "here",
                           "--margin", "1.5"]) == 0
    text = capsys.readouterr().out
    assert "band" in text and "tail_k" in text
    profile = load_profile(out)
    assert profile.name == "here" and "--engine-conditions" in profile.source and "margin 1.5" in profile.source
    assert any("compute 0.3 ms" in n and "2 ranks/2 cores" in n for n in profile.notes)
    fit = profile.fit("gather", 2)
    assert fit.band_lo is not None and fit.band_hi is not None and fit.tail_k is not None
    assert profile.fit("all_reduce", 2).band_hi == pytest.approx(1.25 * 1.5)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rows": [{"op": "all_reduce", "world_size": 2, "bytes": 8, "times_s": [1e-4]}]}))
    assert calibrate_main(["--engine-conditions", "--rows", str(bad), "--out", str(tmp_path / "x.yaml")]) == 2
    assert "transfer_s" in capsys.readouterr().err


def test_engine_sweep_refuses_bad_conditions_before_launching():
    from llmcomm_tests.calibration.sweep import engine_sweep

    with pytest.raises(ValueError, match="order"):
        engine_sweep(2, ["all_reduce"], [8], order="random")
    with pytest.raises(ValueError, match="divide"):
        engine_sweep(4, ["all_reduce"], [8], group_size=3)
    with pytest.raises(ValueError, match="compute-ms"):
        engine_sweep(2, ["all_reduce"], [8], compute_ms=-1)
    with pytest.raises(ValueError, match="compute-mb"):
        engine_sweep(2, ["all_reduce"], [8], compute_mb=-1)


def test_engine_sweep_records_transfers_inside_the_call_time():
    from llmcomm_tests.calibration.sweep import engine_sweep

    repeats = 4
    rows = engine_sweep(2, ["all_reduce", "send_recv", "gather"], [8, 4096], repeats, compute_ms=0.2, warmup=1,
                        timeout_s=120, compute_mb=0.5)  # the compute reads 0.5 MiB of weights each pass
    assert [(r["op"], r["bytes"]) for r in rows] == [("all_reduce", 8), ("all_reduce", 4096), ("send_recv", 8),
                                                      ("send_recv", 4096), ("gather", 8), ("gather", 4096)]
    for row in rows:
        assert row["group_size"] == 2 and row["compute_ms"] == 0.2 and row["compute_mb"] == 0.5
        assert len(row["transfer_s"]) == len(row["transfer_role"]) == 2 * repeats  # both ranks take part
        for j, t in enumerate(row["transfer_s"]):
            k, rank = divmod(j, 2)
            issue, done = row["calls"][rank][0][k], row["calls"][rank][1][k]
            assert issue < done
            assert 0 <= t <= (done - issue) / 1e9 + 1e-9  # after the last arrival, never before its own issue
            assert t <= max(row["times_s"]) + 1e-9
        roles = set(row["transfer_role"])
        assert roles == {"send", "recv"} if row["op"] == "send_recv" else \
            roles == ({"root", "peer"} if row["op"] == "gather" else {""})
        # issue times are on one clock: ranks' k-th calls are close in time, not seconds apart
        assert abs(row["calls"][0][0][0] - row["calls"][1][0][0]) < 5e9


def test_role_and_world_variants_fit_their_own_samples(tmp_path):
    rows = _rows("broadcast", roles=("root", "peer"), role_factor={"root": 2.0, "peer": 0.5})
    rows += [{**r, "world_size": 4, "launch": r["launch"] + 10} for r in
             _rows("broadcast", roles=("root", "peer"), role_factor={"root": 3.0, "peer": 0.5})]
    profile = fit_engine_conditions(rows, "t", margin=1.25)
    top = profile.fit("broadcast", 2)
    assert set(top.variants) == {"root", "peer", "w2", "w4", "w2/root", "w2/peer", "w4/root", "w4/peer"}
    root2 = profile.fit("broadcast", 2, role="root", world_size=2)
    assert root2.alpha_s == pytest.approx(2.0 * ALPHA, rel=1e-3) and root2.beta_Bps == pytest.approx(BETA / 2, rel=1e-3)
    assert (root2.band_lo, root2.band_hi) == (pytest.approx(0.8 / 1.25), pytest.approx(1.25 * 1.25))
    assert profile.fit("broadcast", 2, role="root", world_size=4).alpha_s == pytest.approx(3.0 * ALPHA, rel=1e-3)
    assert profile.fit("broadcast", 2, role="peer", world_size=8) == top.variants["peer"]  # no w8: the role's
    assert profile.fit("broadcast", 2) == top  # no role asked: the pooled fit, whose band covers every role
    assert top.band_lo < 0.5 and top.band_hi > 1.5
    model, low, high, _, _ = latency.transfer_band(profile, "broadcast", 2, 1024, role="peer", world_size=2)
    assert model == pytest.approx(0.5 * _model("broadcast", 2, 1024), rel=1e-3) and low < model < high
    assert latency.transfer_role("send") == "send" and latency.transfer_role("gather", "root") == "root"
    profile.dump(tmp_path / "v.yaml")  # variants survive the YAML
    again = load_profile(tmp_path / "v.yaml")
    assert again.fit("broadcast", 2, role="root", world_size=4) == profile.fit("broadcast", 2, role="root", world_size=4)
    none = fit_engine_conditions(rows, "t", variants=False)
    assert none.fit("broadcast", 2).variants is None


def test_a_variant_faster_than_the_floor_is_refused():
    from dataclasses import replace

    profile = fit_engine_conditions(_rows("gather", roles=("root", "peer")), "t")
    top = profile.fit("gather", 2)
    bad = replace(top, variants={**top.variants, "root": replace(top.variants["root"], alpha_s=0.0)})
    tier = profile.tier("intra")
    ops = {**tier.ops, "gather": {2: bad, "default": bad}}
    with pytest.raises(ValueError, match=r"gather\[2/root\]"):
        profile.with_tier("intra", replace(tier, ops=ops)).validate()
