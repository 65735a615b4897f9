"""``llmcomm predict`` through its main(), JSON output validated, and the study's orderings."""

from __future__ import annotations

import json

import jsonschema
import pytest

from llmcomm_tests.commands import predict as commands_predict
from llmcomm_tests.analytic.volume import predict_volume
from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.engine.layout import Layout

ROW = {"type": "object", "required": ["op", "phase", "site", "count", "bytes", "wire_bytes"],
       "properties": {"op": {"type": "string"}, "phase": {"enum": ["prefill", "decode"]},
                      "site": {"type": "string"}, "count": {"type": "integer", "minimum": 1},
                      "bytes": {"type": "integer", "minimum": 0}, "wire_bytes": {"type": "integer", "minimum": 0}}}
PREDICTION = {
    "type": "object", "required": ["case", "volume", "latency", "metrics"],
    "properties": {
        "case": {"type": "object", "required": ["name", "n_layers", "hidden", "tp", "pp", "batch", "prompt_len",
                                                 "gen_len", "dtype"]},
        "volume": {"type": "array", "items": ROW},
        "latency": {"type": "array", "items": {"type": "object", "required": ["op", "phase", "site", "count",
                                                                                "time_s", "lower_s", "upper_s"]}},
        "metrics": {"type": "object", "required": ["ttft_s", "tpot_s", "e2e_s", "comm_share"],
                    "properties": {k: {"type": "number", "minimum": 0}
                                   for k in ("ttft_s", "tpot_s", "e2e_s", "comm_share")}},
    },
}
SINGLE = {"allOf": [PREDICTION, {"required": ["schema"], "properties": {"schema": {"const": "llmcomm.predict/1"}}}]}
SEVERAL = {"type": "object", "required": ["schema", "predictions"],
           "properties": {"schema": {"const": "llmcomm.predict/1"},
                          "predictions": {"type": "array", "minItems": 2, "items": PREDICTION}}}


def run(tmp_path, *argv):
    out = tmp_path / "p.json"
    assert commands_predict.main([*argv, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_single_layout_json(tmp_path, capsys):
    doc = run(tmp_path, "--engine", "llama-3.1-8b", "--tp", "4", "--pp", "1", "--batch", "1", "--prompt-len", "128",
              "--gen-len", "128", "--hardware", "h100-nvlink4")
    jsonschema.validate(doc, SINGLE)
    case = doc["case"]
    assert (case["tp"], case["pp"], case["dtype"], case["hidden"]) == (4, 1, "bf16", 4096)  # bf16: public shape
    assert doc["volume"] == predict_volume(PRESETS["llama-3.1-8b"], Layout(4, 1), 1, 128, 128, "bf16")
    text = capsys.readouterr().out
    assert "TTFT" in text and "TPOT" in text and "attn" in text and "all_reduce" in text


def test_several_layouts_side_by_side(tmp_path, capsys):
    doc = run(tmp_path, "--engine", "llama-3.1-8b", "--layouts", "4x1,2x2,1x4", "--dtype", "fp16")
    jsonschema.validate(doc, SEVERAL)
    assert [(p["case"]["tp"], p["case"]["pp"]) for p in doc["predictions"]] == [(4, 1), (2, 2), (1, 4)]
    assert {p["case"]["dtype"] for p in doc["predictions"]} == {"fp16"}
    header = [line for line in capsys.readouterr().out.splitlines() if "tp4-pp1" in line][0]
    assert "tp2-pp2" in header and "tp1-pp4" in header


def test_tiny_defaults_to_fp32(tmp_path):
    doc = run(tmp_path, "--engine", "tiny", "--tp", "2", "--hardware", "cpu-loopback")
    assert doc["case"]["dtype"] == "fp32"
    ar = [r for r in doc["volume"] if r["op"] == "all_reduce" and r["phase"] == "prefill" and r["site"] == "attn"][0]
    assert ar["bytes"] == 2 * 4 * (1 * 128 * 256 * 4)  # 2 ranks × 4 layers × [1, 128, 256] fp32


def test_refusals_are_one_line(capsys):
    assert commands_predict.main(["--engine", "llama-3.1-8b", "--tp", "3"]) == 2
    assert "does not divide" in capsys.readouterr().err
    assert commands_predict.main(["--engine", "llama-3.1-8b", "--hardware", "nope"]) == 2
    assert "unknown hardware profile" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["llama-3.2-3b", "llama-3.1-8b", "llama-2-13b"])
def test_study_orderings_on_h100(tmp_path, model):
    """At 128 + 128, one request, on the 8-GPU H100 preset: per-GPU wire volume TP > hybrid > PP, and
    every PP layout has the slowest TPOT (one request cannot fill a pipeline: its stages run in series,
    so PP reads all weights per token on one GPU at a time while TP splits them).  A consequence of
    datasheet presets, not of tuning."""
    doc = run(tmp_path, "--engine", model, "--layouts", "2x1,4x1,8x1,4x2,1x2,1x4,1x8", "--hardware", "h100-nvlink4")
    by = {(p["case"]["tp"], p["case"]["pp"]): p for p in doc["predictions"]}

    def per_gpu(key):
        return sum(r["wire_bytes"] for r in by[key]["volume"]) / (key[0] * key[1])

    tps, hybrid, pps = [(2, 1), (4, 1), (8, 1)], (4, 2), [(1, 2), (1, 4), (1, 8)]
    assert min(per_gpu(k) for k in tps) > per_gpu(hybrid) > max(per_gpu(k) for k in pps)
    # the same world size (8 GPUs) also orders the totals
    total = {k: sum(r["wire_bytes"] for r in by[k]["volume"]) for k in ((8, 1), hybrid, (1, 8))}
    assert total[(8, 1)] > total[hybrid] > total[(1, 8)]
    tpot = {k: p["metrics"]["tpot_s"] for k, p in by.items()}
    assert min(tpot[k] for k in pps) > max(tpot[k] for k in tps + [hybrid])
