"""The analytic volume model equals what the engine really communicates, byte for byte.

Every layout of the tiny engine with W = tp·pp ≤ 4 that validates, two workloads: the closed form
(``analytic.volume.predict_volume``) must equal the recorded ``volume`` of a real multi-process run
row by row (same list: same keys, counts, bytes, wire bytes, same order), and per rank
(``per_rank_volume``) against the records summed per rank.  Plus one bf16 run, and the same
comparison through the command line (``llmcomm run --json`` vs ``llmcomm predict --json``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict

import pytest

from llmcomm_tests.analytic.volume import per_rank_volume, predict_volume
from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.engine.layout import Layout, LayoutError
from llmcomm_tests.runtime.measure import run_engine
from llmcomm_tests.runtime.run_config import RunConfig
from llmcomm_tests.core.contract import site_class
from llmcomm_tests.core.documents import to_json

TINY = PRESETS["tiny"]


def _layouts(max_world: int = 4) -> list[tuple[int, int]]:
    out = []
    for tp in range(1, max_world + 1):
        for pp in range(1, max_world // tp + 1):
            try:
                Layout(tp, pp).validate(TINY)
            except LayoutError:
                continue
            out.append((tp, pp))
    return out


LAYOUTS = _layouts()
WORKLOADS = [(1, 8, 3), (3, 16, 5)]  # (batch, prompt_len, gen_len)


def test_layouts_cover_every_valid_w_le_4():
    assert sorted(LAYOUTS) == sorted([(1, 1), (2, 1), (4, 1), (1, 2), (1, 3), (1, 4), (2, 2)])


def recorded_per_rank(ops, rep: int = 0) -> list[dict]:
    """Records of one repetition summed per (rank, op, phase, site class), ``per_rank_volume``'s shape."""
    table: dict = defaultdict(lambda: [0, 0, 0])
    for op in ops:
        if op.rep != rep:
            continue
        acc = table[(op.rank, op.op, op.phase, site_class(op.site))]
        acc[0] += 1
        acc[1] += op.bytes
        acc[2] += op.wire_bytes
    return [{"rank": k[0], "op": k[1], "phase": k[2], "site": k[3], "count": v[0], "bytes": v[1], "wire_bytes": v[2]}
            for k, v in sorted(table.items())]


def _run(tp: int, pp: int, batch: int, prompt_len: int, gen_len: int, dtype: str = "fp32"):
    cfg = RunConfig(TINY, Layout(tp, pp), batch=batch, prompt_len=prompt_len, gen_len=gen_len, dtype=dtype,
                    repeats=1, warmup=0, keep_records=True)
    return run_engine(cfg, timeout_s=120)


def _assert_matches(doc, tp: int, pp: int, batch: int, prompt_len: int, gen_len: int, dtype: str) -> None:
    layout = Layout(tp, pp)
    predicted = predict_volume(TINY, layout, batch, prompt_len, gen_len, dtype)
    assert [to_json(r) for r in doc.volume] == predicted  # row by row, byte for byte, same order
    assert recorded_per_rank(doc.records) == per_rank_volume(TINY, layout, batch, prompt_len, gen_len, dtype)
    # the run recorded exactly one repetition and nothing outside generate()
    assert {op.rep for op in doc.records} <= {0}
    assert all(op.phase in ("prefill", "decode") for op in doc.records)
    if layout.world_size == 1:
        assert doc.records == [] and doc.ops == [] and predicted == []
    else:
        assert predicted, "a multi-rank layout communicates"


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: f"b{w[0]}-p{w[1]}-g{w[2]}")
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lt: f"tp{lt[0]}-pp{lt[1]}")
def test_recorded_volume_equals_model(layout, workload):
    tp, pp = layout
    doc = _run(tp, pp, *workload)
    _assert_matches(doc, tp, pp, *workload, "fp32")


def test_recorded_volume_equals_model_bf16():
    doc = _run(2, 2, 3, 16, 5, dtype="bf16")
    _assert_matches(doc, 2, 2, 3, 16, 5, "bf16")
    assert {op.dtype for op in doc.records} == {"bfloat16", "int64"}


def test_cli_run_json_volume_equals_cli_predict_json(tmp_path):
    common = ["--engine", "tiny", "--tp", "2", "--pp", "2", "--batch", "3", "--prompt-len", "16",
              "--gen-len", "5", "--dtype", "fp32"]
    run_json, predict_json = tmp_path / "run.json", tmp_path / "predict.json"
    cli = [sys.executable, "-m", "llmcomm_tests.commands"]
    subprocess.run(cli + ["run", *common, "--repeats", "1", "--warmup", "0", "--timeout", "120",
                          "--json", str(run_json)], check=True, capture_output=True, text=True, timeout=180)
    subprocess.run(cli + ["predict", *common, "--hardware", "cpu-loopback", "--json", str(predict_json)],
                   check=True, capture_output=True, text=True, timeout=120)
    run_doc, predict_doc = json.loads(run_json.read_text()), json.loads(predict_json.read_text())
    assert run_doc["volume"] == predict_doc["volume"]
    assert run_doc["volume"], "tp2-pp2 communicates"
