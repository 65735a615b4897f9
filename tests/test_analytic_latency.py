"""α-β formulas, bounds, hardware profiles, calibration fit and the e2e model."""

from __future__ import annotations

import math
import random

import pytest

from llmcomm_tests.analytic import latency
from llmcomm_tests.calibration.fit import fit_profile
from llmcomm_tests.commands.calibrate import main as calibrate_main
from llmcomm_tests.analytic.e2e import compute_times, predict_case
from llmcomm_tests.analytic.hardware import list_profiles, load_profile, profile_from_dict
from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.engine.layout import Layout

SHIPPED = ["a100-nvlink3", "cpu-loopback", "h100-nvlink4", "h100-nvlink4-ib-4gpu", "h200-nvlink4", "pcie-gen4", "pcie-gen5"]


# -- formulas --------------------------------------------------------------------------------------

def test_ring_formulas_hand_computed():
    a, b, m = 1e-5, 1e10, 1e6
    assert latency.hockney_time("all_reduce", 4, m, a, b) == pytest.approx(2 * 3 * a + 2 * 3 / 4 * m / b)  # 2.1e-4
    assert latency.hockney_time("all_reduce", 4, m, a, b) == pytest.approx(2.1e-4)
    assert latency.hockney_time("all_gather", 4, m, a, b) == pytest.approx(3 * a + 0.75 * m / b)
    assert latency.hockney_time("reduce_scatter", 8, m, a, b) == pytest.approx(7 * a + 7 / 8 * m / b)
    assert latency.hockney_time("gather", 4, m, a, b) == pytest.approx(3 * a + 0.75 * m / b)
    assert latency.hockney_time("broadcast", 4, m, a, b) == pytest.approx(3 * a + m / b)
    assert latency.hockney_time("send_recv", 2, m, a, b) == pytest.approx(a + m / b)
    assert latency.hockney_time("all_reduce", 2, m, a, b, base_s=6.6e-6) == pytest.approx(6.6e-6 + 2 * a + m / b)


def test_tree_formulas_and_single_rank():
    a, b, m = 1e-5, 1e10, 1e6
    assert latency.hockney_time("all_reduce", 8, m, a, b, "tree") == pytest.approx(2 * 3 * a + 2 * m / b)
    assert latency.hockney_time("all_gather", 5, m, a, b, "tree") == pytest.approx(3 * a + 0.8 * m / b)
    assert latency.hockney_time("broadcast", 8, m, a, b, "tree") == pytest.approx(3 * a + m / b)
    for op in ("all_reduce", "all_gather", "gather", "broadcast", "reduce_scatter"):
        assert latency.hockney_time(op, 1, m, a, b) == 0.0
    with pytest.raises(ValueError):
        latency.coefficients("all_to_all", 4)
    with pytest.raises(ValueError):
        latency.coefficients("all_reduce", 4, "butterfly")


def test_tier_of():
    assert latency.tier_of([0, 1, 2, 3], 4) == "intra"
    assert latency.tier_of([2, 3, 4, 5], 4) == "inter"
    assert latency.tier_of(range(8), 8) == "intra"


# -- profiles and bounds ---------------------------------------------------------------------------

def test_every_shipped_preset_loads():
    assert set(SHIPPED) <= set(list_profiles())
    for name in list_profiles():
        p = load_profile(name)
        assert p.name == name
        assert set(p.tiers) == {"intra", "inter"}
        assert p.compute.peak_flops > 0 and p.compute.hbm_Bps > 0 and p.ranks_per_node >= 1
        for op in latency.OPS:
            for t in (2, 4, 8):
                assert p.fit(op, t, "intra").beta_Bps > 0
    assert load_profile("h100-nvlink4").ranks_per_node == 8
    assert load_profile("h100-nvlink4-ib-4gpu").ranks_per_node == 4
    with pytest.raises(ValueError, match="unknown hardware profile"):
        load_profile("tpu-v9")


def test_profile_fallbacks_cpu_loopback():
    p = load_profile("cpu-loopback")
    ops = p.tier("intra").ops
    assert p.fit("all_reduce", 2) == ops["all_reduce"][2]           # the measured 2-rank fit
    assert p.fit("all_reduce", 8) == ops["all_reduce"]["default"]   # unmeasured size: the op's default
    assert p.fit("send_recv", 8) == ops["send_recv"][2]             # p2p is always group 2
    f = p.fit("all_reduce", 2)
    assert p.time("all_reduce", 2, 1e6) == pytest.approx(2 * f.alpha_s + 1e6 / f.beta_Bps)


@pytest.mark.parametrize("name", SHIPPED)
def test_bounds_bracket_the_fit(name):
    p = load_profile(name)
    for tier in ("intra", "inter"):
        for op in latency.OPS:
            for t in (2, 3, 4, 8):
                for m in (0, 8, 8192, 1 << 20, 1 << 30):
                    lower, upper = p.bounds(op, t, m, tier)
                    fit = p.time(op, t, m, tier)
                    assert 0 < lower <= fit <= upper, (op, t, m, tier)


def test_floor_hand_computed_h100():
    p = load_profile("h100-nvlink4")
    lower, upper = p.bounds("all_reduce", 8, 8192, "intra")
    assert lower == pytest.approx(1e-6 + 2 * 7 / 8 * 8192 / 450e9)  # alpha_min + ring bytes at peak
    fit = 6.6e-6 + 14 * 0.6e-6 + 2 * 7 / 8 * 8192 / 400e9
    assert p.time("all_reduce", 8, 8192, "intra") == pytest.approx(fit)
    assert upper == pytest.approx(fit * 3.0 + 10e-6)
    assert p.bounds("all_reduce", 1, 8192) == (0.0, 0.0)


def _profile_dict(**intra_fit):
    fit = {"alpha_s": 1e-5, "beta_Bps": 1e9, **intra_fit}
    tier = {"peak_Bps": 2e9, "alpha_min_s": 1e-6, "k_hi": 2.0, "slack_s": 0.0, "ops": {"default": {"default": fit}}}
    return {"name": "unit", "ranks_per_node": 8, "compute": {"peak_flops": 1e12, "hbm_Bps": 1e11},
            "tiers": {"intra": tier, "inter": tier}}


def test_profile_validation_refuses_fit_faster_than_floor():
    profile_from_dict(_profile_dict())
    with pytest.raises(ValueError, match="exceeds peak"):
        profile_from_dict(_profile_dict(beta_Bps=3e9))
    with pytest.raises(ValueError, match="alpha_min"):
        profile_from_dict(_profile_dict(alpha_s=1e-7))


def test_profile_dump_roundtrip(tmp_path):
    p = load_profile("cpu-loopback")
    p.dump(tmp_path / "p.yaml")
    q = load_profile(tmp_path / "p.yaml")
    assert q == p


# -- calibration fit ---------------------------------------------------------------------------------

def synthetic_rows(alpha, beta, world, ops, noise=0.05, repeats=15, seed=1):
    rng = random.Random(seed)
    rows = []
    for op in ops:
        n_a, n_b = latency.coefficients(op, 2 if op == "send_recv" else world)
        for k in range(10, 25, 2):
            m = 2 ** k
            true = n_a * alpha + n_b * m / beta
            times = [true * math.exp(rng.gauss(0, noise)) for _ in range(repeats)]
            rows.append({"op": op, "world_size": world, "bytes": m, "times_s": times})
    return rows


@pytest.mark.parametrize("world", [2, 4])
def test_fit_recovers_alpha_beta(world):
    alpha, beta = 0.3e-3, 1.5e9
    ops = ["all_reduce", "all_gather", "broadcast", "send_recv"]
    p = fit_profile(synthetic_rows(alpha, beta, world, ops), "synthetic")
    for op in ops:
        fit = p.fit(op, world)
        assert fit.alpha_s == pytest.approx(alpha, rel=0.1), op
        assert fit.beta_Bps == pytest.approx(beta, rel=0.05), op
        assert fit.quality["r2"] > 0.99 and fit.quality["median_rel_err"] < 0.05
        assert 1.0 <= fit.k_hi < 1.5  # 5 % lognormal noise: the 0.99 quantile is ~ e^(2.3·0.05)
        assert p.fit(op, 16) == fit  # the measured fit becomes the op's default
    # bounds hold on what was measured: every sample above the floor, 99 % under k_hi × fit
    inside = total = 0
    for row in synthetic_rows(alpha, beta, world, ops):
        lower, upper = p.bounds(row["op"], world, row["bytes"])
        assert lower <= min(row["times_s"])
        inside += sum(t <= upper for t in row["times_s"])
        total += len(row["times_s"])
    assert inside / total >= 0.98


def test_fit_clamps_negative_intercept_and_raises_peak():
    rows = [{"op": "all_reduce", "world_size": 2, "bytes": m, "times_s": [m / 50e9]} for m in (1024, 1 << 20, 1 << 24)]
    p = fit_profile(rows, "fast")  # 50 GB/s beats the cpu-loopback seed's 20 GB/s peak
    fit = p.fit("all_reduce", 2)
    assert fit.beta_Bps == pytest.approx(50e9, rel=1e-6)
    assert p.tier("intra").peak_Bps >= fit.beta_Bps
    assert any("peak raised" in n for n in p.notes)


def test_calibrate_cli_from_saved_rows(tmp_path, capsys):
    import json

    rows = synthetic_rows(0.2e-3, 2e9, 2, list(latency.OPS))
    (tmp_path / "bench.json").write_text(json.dumps({"schema": "llmcomm.bench-comm/1", "rows": rows}))
    out = tmp_path / "prof.yaml"
    assert calibrate_main(["--rows", str(tmp_path / "bench.json"), "--out", str(out), "--name", "here"]) == 0
    text = capsys.readouterr().out
    assert "all_reduce" in text and "R2" in text
    p = load_profile(out)
    assert p.name == "here" and p.fit("gather", 2).quality["points"] == 8


# -- e2e ---------------------------------------------------------------------------------------------

def test_compute_times_roofline_hand_computed():
    shape, p = PRESETS["llama-3.1-8b"], load_profile("h100-nvlink4")
    params = shape.n_params()
    prefill, decode = compute_times(shape, Layout(4, 1), 1, 128, "bf16", p)
    weights = params * 2 / (4 * 3.35e12 * 0.7)
    assert decode == pytest.approx(weights)
    assert prefill == pytest.approx(max(2 * params * 128 / (4 * 989e12 * 0.5), weights))
    # long prompts turn compute-bound
    prefill_long, _ = compute_times(shape, Layout(4, 1), 1, 4096, "bf16", p)
    assert prefill_long == pytest.approx(2 * params * 4096 / (4 * 989e12 * 0.5))


def test_predict_case_sums_the_critical_path():
    """tiny (L=4, h=256, v=1024), TP2, b=1, 4 + 3 tokens, fp32, α = 10 µs, β = 1 GB/s everywhere."""
    prof = profile_from_dict(_profile_dict())
    out = predict_case(PRESETS["tiny"], Layout(2, 1), 1, 4, 3, "fp32", prof)
    a, b = 1e-5, 1e9
    ar_pre = 2 * a + 1 * (4 * 256 * 4) / b  # 9 all-reduces (embed + 2·4) of 4 KiB, n_β = 1 at t = 2
    ar_dec = 2 * a + 1 * (256 * 4) / b
    gather = a + 0.5 * (2 * 512 * 4) / b  # msg = the gathered total 2·(v/t)·4
    bcast = a + 8 / b
    m = out["metrics"]
    assert m["comm_prefill_s"] == pytest.approx(9 * ar_pre + gather)
    assert m["comm_decode_per_token_s"] == pytest.approx(bcast + 9 * ar_dec + gather)
    pre_c, dec_c = compute_times(PRESETS["tiny"], Layout(2, 1), 1, 4, "fp32", prof)
    assert m["ttft_s"] == pytest.approx(pre_c + m["comm_prefill_s"])
    assert m["tpot_s"] == pytest.approx(dec_c + m["comm_decode_per_token_s"])
    assert m["e2e_s"] == pytest.approx(m["ttft_s"] + 2 * m["tpot_s"])
    assert m["comm_share"] == pytest.approx(m["comm_s"] / m["e2e_s"])
    assert m["comm_lower_s"] <= m["comm_s"] <= m["comm_upper_s"]


def test_node_crossing_uses_the_inter_tier():
    shape = PRESETS["llama-3.1-8b"]
    rows = predict_case(shape, Layout(8, 1), 1, 128, 128, "bf16", "h100-nvlink4-ib-4gpu")["latency"]
    assert {r["tiers"] for r in rows} == {"inter"}
    rows = predict_case(shape, Layout(1, 8), 1, 128, 128, "bf16", "h100-nvlink4-ib-4gpu")["latency"]
    boundary = [r for r in rows if r["site"] == "pp.boundary"]
    assert {r["tiers"] for r in boundary} == {"inter+intra"}  # only boundary 4 (rank 3 → 4) crosses


def test_parameter_count_matches_transformers():
    """Cross-check EngineShape.n_params() with a meta-device Llama (no weights allocated)."""
    pytest.importorskip("transformers")
    from accelerate import init_empty_weights
    from transformers import LlamaConfig, LlamaForCausalLM

    for name in ("llama-3.2-3b", "llama-3.1-8b", "llama-2-13b"):
        s = PRESETS[name]
        cfg = LlamaConfig(hidden_size=s.hidden, intermediate_size=s.ffn, num_hidden_layers=s.n_layers,
                          num_attention_heads=s.n_heads, num_key_value_heads=s.n_kv_heads, vocab_size=s.vocab,
                          tie_word_embeddings=False)
        with init_empty_weights():
            model = LlamaForCausalLM(cfg)
        assert sum(p.numel() for p in model.parameters()) == s.n_params(), name
