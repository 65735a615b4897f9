"""Closed-form volume (analytic/volume.py) against hand-computed numbers and docs/communication.md."""

from __future__ import annotations

import pytest

from llmcomm_tests.analytic import volume
from llmcomm_tests.analytic.volume import op_instances, per_rank_volume, predict_volume, study_totals, summarize
from llmcomm_tests.engine.config import PRESETS, EngineShape
from llmcomm_tests.engine.layout import Layout, LayoutError

L8B = PRESETS["llama-3.1-8b"]


def by_key(rows):
    return {(r["op"], r["phase"], r["site"]): (r["count"], r["bytes"], r["wire_bytes"]) for r in rows}


def test_llama31_8b_tp4_hand_computed():
    """Llama-3.1-8B (L=32, h=4096, v=128256), TP4, b=1, 128 + 128, bf16 (e=2)."""
    rows = by_key(predict_volume(L8B, Layout(4, 1), 1, 128, 128, "bf16"))
    pre = 1 * 128 * 4096 * 2  # prefill activation [b, s, h]: 1 MiB
    dec = 1 * 1 * 4096 * 2  # decode activation: 8 KiB
    # all_reduce wire per call: 2(t-1)·M // t = 6·M // 4
    assert rows[("all_reduce", "prefill", "attn")] == (4 * 32, 4 * 32 * pre, 4 * 32 * (6 * pre // 4))
    assert rows[("all_reduce", "prefill", "mlp")] == (128, 134217728, 201326592)
    assert rows[("all_reduce", "decode", "attn")] == (4 * 32 * 127, 4 * 32 * 127 * dec, 4 * 32 * 127 * 12288)
    assert rows[("all_reduce", "decode", "attn")] == (16256, 133169152, 199753728)
    assert rows[("all_reduce", "prefill", "embed")] == (4, 4 * pre, 4 * 1572864)
    assert rows[("all_reduce", "decode", "embed")] == (4 * 127, 4 * 127 * dec, 4 * 127 * 12288)
    total_ar = sum(c for (op, _, _), (c, _, _) in rows.items() if op == "all_reduce")
    assert total_ar == 4 * (2 * 32 + 1) * 128 == 33280
    # logits gather: m = b·v/t·e = 128256/4·2 = 64128 B per rank; 3 non-root ranks put it on the wire
    m = 128256 // 4 * 2
    assert rows[("gather", "prefill", "lm_head")] == (4, 4 * m, 3 * m)
    assert rows[("gather", "decode", "lm_head")] == (4 * 127, 4 * 127 * m, 3 * 127 * m)
    # next-input-id broadcast: decode only, b int64 = 8 B per call, wire only at the root
    assert rows[("broadcast", "decode", "tokens.broadcast")] == (4 * 127, 4 * 127 * 8, 127 * 8)
    assert set(rows) == {("all_reduce", ph, s) for ph in ("prefill", "decode") for s in ("attn", "mlp", "embed")} | {
        ("gather", "prefill", "lm_head"), ("gather", "decode", "lm_head"), ("broadcast", "decode", "tokens.broadcast")}


def test_llama31_8b_pp4_boundaries_and_tokens():
    """PP4 (t=1): 3 boundaries × 2 tensors sent per forward, full [b, s, h] each; ids back as int64."""
    rows = by_key(predict_volume(L8B, Layout(1, 4), 1, 128, 128, "bf16"))
    pre, dec = 128 * 4096 * 2, 4096 * 2
    assert rows[("send", "prefill", "pp.boundary")] == (6, 6 * pre, 6 * pre)
    assert rows[("recv", "prefill", "pp.boundary")] == (6, 6 * pre, 0)
    assert rows[("send", "decode", "pp.boundary")] == (6 * 127, 6 * 127 * dec, 6 * 127 * dec)
    assert rows[("send", "prefill", "pp.tokens")] == (1, 8, 8)
    assert rows[("recv", "prefill", "pp.tokens")] == (1, 8, 0)
    assert rows[("send", "decode", "pp.tokens")] == (127, 127 * 8, 127 * 8)
    assert {op for op, _, _ in rows} == {"send", "recv"}


def test_llama31_8b_hybrid_4x2_slices_and_all_gather():
    rows = by_key(predict_volume(L8B, Layout(4, 2), 1, 128, 128, "bf16"))
    part = 128 * 4096 * 2 // 4  # one tp_rank's 1/t slice, prefill
    assert rows[("send", "prefill", "pp.boundary")] == (2 * 4, 8 * part, 8 * part)
    assert rows[("all_gather", "prefill", "pp.boundary")] == (8, 8 * part, 8 * 3 * part)  # wire (t-1)·m
    # stage 0 has embed + 16 layers, stage 1 has 16 layers: 4 ranks each
    assert rows[("all_reduce", "prefill", "attn")][0] == 4 * 32
    assert rows[("all_reduce", "prefill", "embed")][0] == 4
    assert rows[("gather", "decode", "lm_head")][0] == 4 * 127
    assert rows[("broadcast", "decode", "tokens.broadcast")][0] == 4 * 127
    assert rows[("send", "decode", "pp.tokens")] == (127, 127 * 8, 127 * 8)


SMALL = EngineShape("small7", n_layers=7, hidden=64, n_heads=8, n_kv_heads=4, ffn=96, vocab=96)


@pytest.mark.parametrize("t,p", [(1, 1), (2, 1), (1, 2), (2, 2), (2, 3), (4, 2), (1, 7), (4, 7), (8, 3)])
def test_counts_structure(t, p):
    """Counts from docs/communication.md for any t, p, including uneven stage splits (L=7)."""
    b, sp, sd, L = 2, 3, 5, SMALL.n_layers
    counts: dict[str, int] = {}
    for r in predict_volume(SMALL, Layout(t, p), b, sp, sd, "fp32"):
        counts[r["op"]] = counts.get(r["op"], 0) + r["count"]
    expected = {}
    if t > 1:
        expected["all_reduce"] = t * (2 * L + 1) * sd
        expected["broadcast"] = t * (sd - 1)
        expected["gather"] = t * sd
    if p > 1:
        expected["send"] = expected["recv"] = (2 * (p - 1) * t + 1) * sd
    if t > 1 and p > 1:
        expected["all_gather"] = 2 * (p - 1) * t * sd
    assert counts == expected


def test_uneven_split_per_rank():
    """L=7 over p=3: vLLM gives [2, 3, 2] (extra layer before the last stage)."""
    assert [len(r) for r in Layout(2, 3).stage_layers(7)] == [2, 3, 2]
    rows = per_rank_volume(SMALL, Layout(2, 3), 1, 4, 3, "fp32")
    ar = {}
    for r in rows:
        if r["op"] == "all_reduce":
            ar[r["rank"]] = ar.get(r["rank"], 0) + r["count"]
    # per forward: stage 0 = embed + 2·2, stage 1 = 2·3, stage 2 = 2·2; 3 forwards
    assert ar == {0: 15, 1: 15, 2: 18, 3: 18, 4: 12, 5: 12}
    # per-rank rows add up to the summed rows
    total = {}
    for r in rows:
        key = (r["op"], r["phase"], r["site"])
        c, nb, w = total.get(key, (0, 0, 0))
        total[key] = (c + r["count"], nb + r["bytes"], w + r["wire_bytes"])
    assert total == by_key(predict_volume(SMALL, Layout(2, 3), 1, 4, 3, "fp32"))


def test_token_transfers_are_int64_whatever_the_dtype():
    for dtype in ("fp32", "bf16"):
        rows = by_key(predict_volume(SMALL, Layout(2, 2), 3, 4, 6, dtype))
        assert rows[("broadcast", "decode", "tokens.broadcast")] == (2 * 5, 2 * 5 * 3 * 8, 5 * 3 * 8)
        assert rows[("send", "decode", "pp.tokens")] == (5, 5 * 3 * 8, 5 * 3 * 8)
        assert rows[("recv", "prefill", "pp.tokens")] == (1, 3 * 8, 0)


def test_wire_bytes_are_integers_per_call_then_times_count():
    shape = EngineShape("t3", n_layers=2, hidden=96, n_heads=6, n_kv_heads=3, ffn=96, vocab=99)
    rows = predict_volume(shape, Layout(3, 1), 1, 5, 4, "bf16")
    for r in rows:
        assert isinstance(r["wire_bytes"], int) and isinstance(r["bytes"], int)
    ar = by_key(rows)[("all_reduce", "prefill", "attn")]
    per_call = 1 * 5 * 96 * 2
    assert ar == (3 * 2, 6 * per_call, 6 * (2 * 2 * per_call // 3))


def test_rows_sorted_and_deterministic():
    rows = predict_volume(L8B, Layout(4, 2), 1, 16, 4, "bf16")
    assert rows == sorted(rows, key=lambda r: (r["op"], r["phase"], r["site"]))
    assert rows == predict_volume(L8B, Layout(4, 2), 1, 16, 4, "bf16")
    assert all(set(r) == set(volume.ROW_KEYS) for r in rows)


def test_single_rank_and_single_token_generation():
    assert predict_volume(L8B, Layout(1, 1), 1, 128, 128, "bf16") == []
    rows = predict_volume(SMALL, Layout(2, 2), 1, 4, 1, "fp32")  # prefill only: no decode rows
    assert {r["phase"] for r in rows} == {"prefill"}
    assert "broadcast" not in {r["op"] for r in rows}


def test_invalid_inputs_refused():
    with pytest.raises(LayoutError):
        predict_volume(L8B, Layout(3, 1), 1, 8, 8)
    with pytest.raises(ValueError):
        predict_volume(L8B, Layout(2, 1), 1, 8, 8, "int8")
    with pytest.raises(ValueError):
        predict_volume(L8B, Layout(2, 1), 1, 8, 0)


@pytest.mark.parametrize("layout", [Layout(2, 1), Layout(1, 3), Layout(2, 3), Layout(4, 2)])
def test_op_instances_add_up_to_volume(layout):
    rows = predict_volume(SMALL, layout, 2, 5, 4, "bf16")
    inst = op_instances(SMALL, layout, 2, 5, 4, "bf16")
    assert sum(i["count"] * i["wire_bytes"] for i in inst) == sum(r["wire_bytes"] for r in rows)
    assert sum(i["count"] * i["calls"] for i in inst) == sum(r["count"] for r in rows)
    for i in inst:
        if i["op"] in ("all_gather", "gather"):
            assert i["msg_bytes"] == layout.tp * i["bytes"]  # nccl-tests size: the gathered total
        else:
            assert i["msg_bytes"] == i["bytes"]
        assert i["group_size"] == (2 if i["op"] == "send_recv" else layout.tp)


def test_hybrid_boundary_slices_run_in_parallel():
    inst = [i for i in op_instances(L8B, Layout(4, 2), 1, 128, 2, "bf16")
            if i["site"] == "pp.boundary" and i["op"] == "send_recv" and i["phase"] == "prefill"]
    assert len(inst) == 1
    assert inst[0]["parallel"] == 4 and inst[0]["count"] == 2 and inst[0]["ranks"] == tuple(range(8))
    assert inst[0]["bytes"] == 128 * 4096 * 2 // 4


def test_per_token_summary():
    rows = predict_volume(L8B, Layout(4, 1), 1, 128, 128, "bf16")
    s = summarize(rows, 1, 128, 4)
    assert s["wire_bytes"] == sum(r["wire_bytes"] for r in rows)
    assert s["wire_bytes_per_token"] == s["wire_bytes"] / (1 * 128)
    assert s["wire_bytes_per_gpu"] == s["wire_bytes"] / 4


def test_study_totals_tp_and_pp_match_term_by_term():
    """The study's totals (docs/communication.md) with N = Sp + Sd − 1 = 255 tokens, in elements."""
    tp = study_totals(L8B, Layout(4, 1), 1, 128, 128)
    assert tp["kind"] == "tp"
    ar, logits = tp["terms"]
    assert ar["study"] == (2 * 32 + 1) * 255 * 4096 * 1 * 2 * 3 // 4 == 101836800
    assert logits["study"] == 128 * (128256 // 4) * 1
    assert ar["equal"] and logits["equal"]
    pp = study_totals(L8B, Layout(1, 4), 1, 128, 128)
    assert pp["terms"][0]["study"] == 3 * 2 * 255 * 4096 == pp["terms"][0]["engine"]
    assert pp["token_bytes"] == {"pp.tokens": 128 * 8}  # what the study leaves out


def test_study_totals_hybrid_differs_only_by_the_embedding_all_reduce():
    h = study_totals(L8B, Layout(4, 2), 1, 128, 128)
    ar, gathered, logits, slices = h["terms"]
    assert not ar["equal"]
    # ours: (2L + 1) all-reduces averaged over p = 2 stages vs the study's 2L/p per stage
    assert ar["engine"] - ar["study"] == 255 * 4096 * 2 * 3 // 4 // 2
    assert gathered["study"] == 2 * 1 * 255 * 4096 * 3 // 4 and gathered["equal"]
    assert logits["equal"]
    assert slices["study"] == 1 * 2 * 255 * (4096 // 4) and slices["equal"]
    assert h["token_bytes"] == {"pp.tokens": 128 * 8, "tokens.broadcast": 127 * 8}
    assert "pp.tokens" in volume.DIFFERENCES and "embedding" in volume.DIFFERENCES
