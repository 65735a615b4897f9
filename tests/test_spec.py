"""SLO spec loading: typed cases from a good spec; one located error per malformed spec."""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmcomm_tests.engine.config import DTYPE_BYTES, PRESETS
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.spec import (BUDGET_METRICS, OP_CLASSES, SCHEMA_PATH, SLO_PRESETS, Case, LatencyTolerance, Spec, SpecError, load_spec, load_specs, parse_bytes, parse_duration, parse_spec, spec_schema)

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
name: tp-vs-pp
description: TP against PP on the tiny engine
engine: tiny
dtype: bf16
workload:
  batch: [1, 2]
  prompt_len: 16
  gen_len: [4, 8]
layouts:
  - {tp: 2, pp: 1}
  - "2x2"
  - tp: 1
    pp: 4
  - tp4-pp1
repeats: 3
warmup: 0
hardware: cpu-loopback
tolerances:
  latency:
    inside_fraction: 0.8
    slack: 0.25
    tail_slack: 0.5
    per_op: {send: {slack: 1.0}, recv: {tail_slack: 2}}
budgets:
  hardware: h100-nvlink4x8
  preset: mlperf-llama3.1-8b-interactive
  ttft: {p50: 200ms, p99: "2 s"}
  e2e: {p99: 1.5}
  comm_time_per_token: {p99: 250us}
  comm_share: {p50: 0.2, p99: 0.4}
  bytes_per_token: {max: 64 KiB}
  op_latency:
    all_reduce: {p50: 50us, p99: 1ms, hardware: cpu-loopback}
baseline: {threshold: 0.1, min_detectable: 0.07, metrics: [ttft, bytes_per_token]}
requires: {gpus: 0, backend: gloo}
marks: [slow]
"""


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> str:
    """Write under tmp_path/slo_specs and return the relative path (cwd is tmp_path)."""
    (tmp_path / "slo_specs").mkdir(exist_ok=True)
    (tmp_path / "slo_specs" / name).write_text(text, encoding="utf-8")
    return f"slo_specs/{name}"


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


# ---------------------------------------------------------------------------------------------
# A good spec


def test_good_spec_types_and_defaults(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert isinstance(spec, Spec)
    assert spec.name == "tp-vs-pp"
    assert spec.engine == PRESETS["tiny"]
    assert spec.dtype == "bf16"
    assert spec.layouts == (Layout(2, 1), Layout(2, 2), Layout(1, 4), Layout(4, 1))
    assert (spec.repeats, spec.warmup, spec.hardware) == (3, 0, "cpu-loopback")
    assert [(w.batch, w.prompt_len, w.gen_len) for w in spec.workloads] == [
        (1, 16, 4), (1, 16, 8), (2, 16, 4), (2, 16, 8)
    ]
    assert spec.marks == ("slow",)
    assert spec.requires.backend == "gloo" and spec.requires.gpus == 0
    assert spec.baseline.threshold == 0.1 and spec.baseline.metrics == ("ttft", "bytes_per_token")
    lat = spec.tolerances.latency
    assert (lat.inside_fraction, lat.slack) == (0.8, 0.25)
    assert (lat.for_op("send").inside_fraction, lat.for_op("send").slack) == (0.8, 1.0)
    assert lat.for_op("all_reduce").slack == 0.25
    # the tail's margin is its own, inherited like the others; unset it is the band's slack
    assert [lat.for_op(op).tail_margin for op in ("all_reduce", "send", "recv")] == [0.5, 0.5, 2]
    assert lat.for_op("recv").slack == 0.25 and LatencyTolerance(slack=0.3).tail_margin == 0.3
    assert spec.line_of("layouts[2].pp") == 13
    assert spec.line_of("budgets.op_latency.all_reduce.p99") == 33
    assert hash(spec) == hash(load_spec("slo_specs/x.yaml"))


def test_good_spec_cases(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    cases = spec.cases()
    assert len(cases) == 4 * 4
    assert all(isinstance(c, Case) for c in cases)
    assert [c.id for c in cases[:4]] == [
        "tp2-pp1-b1-s16-g4", "tp2-pp1-b1-s16-g8", "tp2-pp1-b2-s16-g4", "tp2-pp1-b2-s16-g8"
    ]
    assert [c.world_size for c in cases[::4]] == [2, 4, 4, 4]
    assert [c.line for c in cases[::4]] == [10, 11, 12, 14]
    c = cases[5]
    assert (c.spec_name, c.path, c.dtype, c.dtype_bytes, c.layout) == (
        "tp-vs-pp", Path("slo_specs/x.yaml"), "bf16", 2, Layout(2, 2))
    assert (c.batch, c.prompt_len, c.gen_len, c.repeats, c.warmup) == (1, 16, 8, 3, 0)
    assert c.budgets is spec.budgets and c.tolerances is spec.tolerances
    assert str(c) == "tp-vs-pp[tp2-pp2-b1-s16-g8]"


def test_good_spec_budgets(tmp_path):
    b = load_spec(write(tmp_path, GOOD)).budgets
    assert b.hardware == "h100-nvlink4x8" and b.preset == "mlperf-llama3.1-8b-interactive"
    assert b.get("ttft").p50 == pytest.approx(0.2) and b.get("ttft").p99 == 2.0
    assert b.get("tpot").p99 == 0.030  # from the MLPerf preset
    assert b.get("e2e").p99 == 1.5 and b.get("e2e").p50 is None
    assert b.get("comm_time_per_token").p99 == pytest.approx(250e-6)
    assert (b.get("comm_share").p50, b.get("comm_share").p99) == (0.2, 0.4)
    assert b.get("bytes_per_token").max == 65536 and b.get("bytes_per_token").unit == "bytes"
    ar = b.get("op_latency", "all_reduce")
    assert ar.key == "op_latency.all_reduce" and ar.p50 == pytest.approx(50e-6) and ar.p99 == pytest.approx(1e-3)
    # hardware: block default, per-budget override; counted bytes apply everywhere
    assert {x.key for x in b.applicable("cpu-loopback")} == {"bytes_per_token", "op_latency.all_reduce"}
    assert len(b.not_applicable("cpu-loopback")) == 5
    assert len(b.applicable("h100-nvlink4x8")) == 6


def test_minimal_spec_defaults(tmp_path):
    spec = load_spec(write(tmp_path, "name: m\nengine: tiny\nworkload: {prompt_len: 8, gen_len: 4}\n"
                                     "layouts: ['1x1']\n"))
    assert (spec.dtype, spec.repeats, spec.warmup, spec.hardware) == ("fp32", 5, 1, "cpu-loopback")
    assert spec.workloads[0].batch == 1
    assert len(spec.budgets) == 0 and spec.baseline is None and spec.marks == ()
    assert spec.tolerances.latency.inside_fraction == 0.9 and spec.tolerances.latency.slack == 0.0
    assert [c.id for c in spec.cases()] == ["tp1-pp1-b1-s8-g4"]


def test_engine_forms(tmp_path):
    head = "name: e\nworkload: {prompt_len: 8, gen_len: 4}\nlayouts: ['1x1']\n"
    spec = load_spec(write(tmp_path, head + "engine: {preset: tiny, n_layers: 2, name: tiny2}\n"))
    assert spec.engine.n_layers == 2 and spec.engine.hidden == 256 and spec.engine.name == "tiny2"
    shape = "engine: {n_layers: 2, hidden: 64, n_heads: 4, n_kv_heads: 2, ffn: 128, vocab: 100}\n"
    spec = load_spec(write(tmp_path, head + shape))
    assert spec.engine.name == "custom" and spec.engine.head_dim == 16


def test_budget_hardware_defaults_to_spec_hardware(tmp_path):
    text = ("name: h\nengine: tiny\nhardware: h100-nvlink4\nworkload: {prompt_len: 8, gen_len: 4}\n"
            "layouts: ['1x1']\nbudgets: {ttft: {p99: 2s}, tpot: {p99: 100ms, hardware: a100-nvlink3}}\n")
    b = load_spec(write(tmp_path, text)).budgets
    assert b.hardware is None
    assert b.get("ttft").hardware == "h100-nvlink4" and b.get("tpot").hardware == "a100-nvlink3"


def test_min_gpus_and_nccl_default(tmp_path):
    head = "name: g\nengine: tiny\nworkload: {prompt_len: 8, gen_len: 4}\nlayouts: ['2x1', '2x2']\n"
    assert load_spec(write(tmp_path, head + "min_gpus: 4\n")).requires.gpus == 4
    assert load_spec(write(tmp_path, head + "requires: {backend: nccl}\n")).requires.gpus == 4


@pytest.mark.parametrize(
    "text, seconds",
    [(0.2, 0.2), (2, 2.0), ("200ms", 0.2), ("2 s", 2.0), ("1.5s", 1.5), ("250us", 250e-6), ("250µs", 250e-6),
     ("30 ns", 30e-9), (".5s", 0.5), ("1e3ms", 1.0)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["2", "2 seconds", "-1s", "0ms", 0, -0.5, True, "ms", "1,5s"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_parse_bytes():
    assert parse_bytes("64 KiB") == 65536 and parse_bytes("1.5MB") == 1.5e6 and parse_bytes(100) == 100
    with pytest.raises(ValueError):
        parse_bytes("64 kibibytes")


# ---------------------------------------------------------------------------------------------
# Malformed specs: exactly one error, "<path>:<line>: <field>: ..."

HEAD = "name: bad\nengine: tiny\nworkload: {prompt_len: 8, gen_len: 4}\n"  # lines 1-3

BAD = [
    # id, text, line, field (None: whole file), fragment of the message
    ("yaml-syntax", "name: bad\nengine: tiny\n  dtype: fp32\n", 3, None, "YAML syntax error"),
    ("yaml-unclosed-flow", HEAD + "layouts: [1x1\nrepeats: 2\n", 5, None, "YAML syntax error"),
    ("empty-file", "", 1, None, "empty spec"),
    ("only-comments", "# nothing yet\n\n", 1, None, "empty spec"),
    ("top-level-list", "- name: bad\n- engine: tiny\n", 1, None, "top level must be a mapping"),
    ("two-documents", HEAD + "layouts: ['1x1']\n---\nname: other\n", 5, None,
     "expected a single document in the stream at line 1, but found another"),
    ("unknown-top-field", HEAD + "layouts: ['1x1']\nrepeat: 3\n", 5, "repeat", "did you mean 'repeats'"),
    ("unknown-nested-field", "name: bad\nengine: tiny\nworkload:\n  prompt_len: 8\n  gen_len: 4\n  batchsize: 2\n"
     "layouts: ['1x1']\n", 6, "workload.batchsize", "unknown field"),
    ("string-for-int", HEAD + "layouts: ['1x1']\nrepeats: five\n", 5, "repeats", "expected an integer, got 'five'"),
    ("negative-batch", "name: bad\nengine: tiny\nworkload:\n  batch: -1\n  prompt_len: 8\n  gen_len: 4\n"
     "layouts: ['1x1']\n", 4, "workload.batch", "must be >= 1, got -1"),
    ("zero-gen-len-in-sweep", "name: bad\nengine: tiny\nworkload:\n  prompt_len: 8\n  gen_len:\n    - 4\n    - 0\n"
     "layouts: ['1x1']\n", 7, "workload.gen_len[1]", "must be >= 1, got 0"),
    ("empty-sweep", "name: bad\nengine: tiny\nworkload: {prompt_len: [], gen_len: 4}\nlayouts: ['1x1']\n",
     3, "workload.prompt_len", "must not be empty"),
    ("sweep-repeats-a-value", "name: bad\nengine: tiny\nworkload:\n  batch: [1,\n    1]\n  prompt_len: 8\n"
     "  gen_len: 4\nlayouts: ['1x1']\n", 5, "workload.batch[1]", "listed twice"),
    ("empty-layouts", HEAD + "layouts: []\n", 4, "layouts", "must not be empty"),
    ("request-beyond-context", "name: bad\nengine: {preset: tiny, max_position: 64}\nworkload:\n  prompt_len: [8,\n"
     "    61]\n  gen_len: 4\nlayouts: ['1x1']\n", 5, "workload.prompt_len[1]",
     "prompt_len + gen_len = 61 + 4 exceeds the context of tiny: max_position 64 tokens"),
    ("unparseable-layout", HEAD + "layouts:\n  - 1x1\n  - 2y2\n", 6, "layouts[1]", "cannot parse layout"),
    ("layout-zero", HEAD + "layouts: ['0x2']\n", 4, "layouts[0]", "tp0-pp2: tp and pp must be >= 1"),
    ("tp-not-dividing-heads", HEAD + "layouts:\n  - {tp: 2}\n  - {tp: 3, pp: 1}\n", 6, "layouts[1].tp",
     "tp=3 does not divide 8 attention heads"),
    ("tp-string-not-dividing-heads", HEAD + "layouts: ['3x1']\n", 4, "layouts[0]", "does not divide 8"),
    ("pp-exceeds-layers", HEAD + "layouts:\n  - tp: 1\n    pp: 8\n", 6, "layouts[0].pp", "pp=8 exceeds 4 layers"),
    ("float-tp", HEAD + "layouts:\n  - {tp: 2.0, pp: 1}\n", 5, "layouts[0].tp", "expected an integer, got 2.0"),
    ("bool-for-int", HEAD + "layouts: ['1x1']\nrepeats: true\n", 5, "repeats", "got true (a boolean)"),
    ("unknown-layout-field", HEAD + "layouts:\n  - {tp: 2, dp: 2}\n", 5, "layouts[0].dp", "unknown field"),
    ("unknown-engine-preset", "name: bad\nengine: llama-9b\nworkload: {prompt_len: 8, gen_len: 4}\n"
     "layouts: ['1x1']\n", 2, "engine", "unknown engine preset 'llama-9b'; expected one of: tiny"),
    ("unknown-engine-field", "name: bad\nengine:\n  preset: tiny\n  n_heeds: 4\n"
     "workload: {prompt_len: 8, gen_len: 4}\nlayouts: ['1x1']\n", 4, "engine.n_heeds", "did you mean 'n_heads'"),
    ("engine-shape-incomplete", "name: bad\nengine:\n  n_layers: 2\n  hidden: 64\n"
     "workload: {prompt_len: 8, gen_len: 4}\nlayouts: ['1x1']\n", 2, "engine.n_heads", "required field missing"),
    ("engine-shape-inconsistent", "name: bad\nengine:\n  preset: tiny\n  hidden: 100\n"
     "workload: {prompt_len: 8, gen_len: 4}\nlayouts: ['1x1']\n", 4, "engine.hidden", "not divisible by n_heads"),
    ("engine-kv-heads-not-dividing", "name: bad\nengine:\n  preset: tiny\n  n_kv_heads: 3\n"
     "workload: {prompt_len: 8, gen_len: 4}\nlayouts: ['1x1']\n", 4, "engine.n_kv_heads", "not divisible by n_kv_heads 3"),
    ("engine-list", "name: bad\nengine: [tiny]\nworkload: {prompt_len: 8, gen_len: 4}\nlayouts: ['1x1']\n",
     2, "engine", "expected a string or a mapping, got a list"),
    ("bad-dtype", HEAD + "layouts: ['1x1']\ndtype: fp8\n", 5, "dtype", "'fp8'; expected one of: fp32, bf16, fp16"),
    ("bad-duration", HEAD + "layouts: ['1x1']\nbudgets:\n  ttft: {p99: 2 seconds}\n", 6, "budgets.ttft.p99",
     "expected a positive duration"),
    ("zero-duration", HEAD + "layouts: ['1x1']\nbudgets:\n  e2e:\n    p99: 0ms\n", 7, "budgets.e2e.p99",
     "must be positive"),
    ("p50-above-p99", HEAD + "layouts: ['1x1']\nbudgets:\n  tpot:\n    p50: 2s\n    p99: 500ms\n", 7,
     "budgets.tpot.p50", "p50 2 s exceeds p99 500 ms"),
    ("budget-without-percentile", HEAD + "layouts: ['1x1']\nbudgets:\n  ttft: {hardware: h100-nvlink4}\n", 6,
     "budgets.ttft", "needs p50 and/or p99"),
    ("comm-share-above-one", HEAD + "layouts: ['1x1']\nbudgets:\n  comm_share: {p99: 1.5}\n", 6,
     "budgets.comm_share.p99", "must be <= 1"),
    ("unknown-budget-metric", HEAD + "layouts: ['1x1']\nbudgets:\n  ttft: {p99: 2s}\n  latency: {p99: 1s}\n", 7,
     "budgets.latency", "unknown field"),
    ("unknown-op-class", HEAD + "layouts: ['1x1']\nbudgets:\n  op_latency:\n    allreduce: {p99: 1ms}\n", 7,
     "budgets.op_latency.allreduce", "did you mean 'all_reduce'"),
    ("bad-budget-hardware", HEAD + "layouts: ['1x1']\nbudgets:\n  hardware: H100 NVLink\n", 6,
     "budgets.hardware", "hardware profile name"),
    ("tpot-needs-decode", "name: bad\nengine: tiny\nworkload:\n  prompt_len: 8\n  gen_len: [1, 4]\n"
     "layouts: ['1x1']\nbudgets: {tpot: {p99: 1s}}\n", 5, "workload.gen_len[0]", "needs one (gen_len >= 2)"),
    ("python-tag", HEAD + "layouts: ['1x1']\ndescription: !!python/object/apply:os.system ['echo hi']\n", 5,
     "description", "unsupported YAML tag '!!python/object/apply:os.system'"),
    ("local-tag", HEAD + "layouts:\n  - !layout 2x2\n", 5, "layouts[0]", "unsupported YAML tag '!layout'"),
    ("duplicate-case-id", HEAD + "layouts:\n  - 2x1\n  - 1x1\n  - {tp: 2, pp: 1}\n", 7, "layouts[2]",
     "duplicate case id tp2-pp1-b1-s8-g4 (layout tp2-pp1 already listed at line 5)"),
    ("duplicate-key", HEAD + "layouts: ['1x1']\ndtype: fp32\ndtype: bf16\n", 6, "dtype", "first given at line 5"),
    ("non-string-key", HEAD + "layouts: ['1x1']\n1: one\n", 5, None, "mapping key 1 is an integer, not a string"),
    ("bool-key", HEAD + "layouts:\n  - {tp: 2, yes: 1}\n", 5, "layouts[0]", "mapping key yes is a boolean"),
    ("anchor-in-unknown-field", "base: &b {prompt_len: 8}\n" + HEAD + "layouts: ['1x1']\n", 1, "base",
     "did you mean 'baseline'"),
    ("typo-in-custom-engine", "name: bad\nengine:\n  n_layer: 2\n  hidden: 64\n  n_heads: 4\n  n_kv_heads: 2\n"
     "  ffn: 128\n  vocab: 100\nworkload: {prompt_len: 8, gen_len: 4}\nlayouts: ['1x1']\n", 3, "engine.n_layer",
     "did you mean 'n_layers'"),
    ("sweep-wrong-type", "name: bad\nengine: tiny\nworkload: {batch: eight, prompt_len: 8, gen_len: 4}\n"
     "layouts: ['1x1']\n", 3, "workload.batch", "expected an integer or a list of them, got 'eight'"),
    ("layout-int", HEAD + "layouts: [2]\n", 4, "layouts[0]", "expected a string or a mapping, got 2"),
    ("merge-key-used", "name: bad\nengine: tiny\nworkload:\n  <<: {prompt_len: 8}\n  gen_len: 4\n"
     "layouts: ['1x1']\n", 4, "workload", "merge keys"),
    ("missing-name", "engine: tiny\nworkload: {prompt_len: 8, gen_len: 4}\nlayouts: ['1x1']\n", 1, "name",
     "required field missing"),
    ("missing-layouts", HEAD + "repeats: 2\n", 1, "layouts", "required field missing"),
    ("missing-gen-len", "name: bad\nengine: tiny\nworkload:\n  prompt_len: 8\nlayouts: ['1x1']\n", 3,
     "workload.gen_len", "required field missing"),
    ("bad-name", "name: my spec\nengine: tiny\nworkload: {prompt_len: 8, gen_len: 4}\nlayouts: ['1x1']\n", 1,
     "name", "spec name is letters"),
    ("infinite-number", HEAD + "layouts: ['1x1']\nbudgets: {e2e: {p99: .inf}}\n", 5, "budgets.e2e.p99", "finite"),
    ("warmup-negative", HEAD + "layouts: ['1x1']\nwarmup: -1\n", 5, "warmup", "must be >= 0"),
    ("inside-fraction-zero", HEAD + "layouts: ['1x1']\ntolerances: {latency: {inside_fraction: 0}}\n", 5,
     "tolerances.latency.inside_fraction", "must be > 0"),
    ("baseline-below-mde", HEAD + "layouts: ['1x1']\nbaseline:\n  threshold: 0.05\n  min_detectable: 0.07\n", 6,
     "baseline.threshold", "below min_detectable"),
    ("min-gpus-contradicts", HEAD + "layouts: ['1x1']\nrequires: {gpus: 8}\nmin_gpus: 4\n", 6, "min_gpus",
     "contradicts requires.gpus 8"),
    ("nccl-too-few-gpus", HEAD + "layouts: ['2x1', '2x2']\nrequires: {gpus: 2, backend: nccl}\n", 4, "layouts[1]",
     "needs 4 ranks"),
    ("mark-with-arguments", HEAD + "layouts: ['1x1']\nmarks: [slow, parametrize]\n", 5, "marks[1]",
     "needs arguments"),
    ("bad-mark-name", HEAD + "layouts: ['1x1']\nmarks: [slow-ish]\n", 5, "marks[0]", "Python identifier"),
]


@pytest.mark.parametrize("text, line, field, fragment", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_malformed_spec(tmp_path, text, line, field, fragment):
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    message = str(err)
    assert "\n" not in message  # one error, one line
    prefix = f"{path}:{line}: {field}: " if field else f"{path}:{line}: "
    assert message.startswith(prefix), message
    assert (err.path, err.line, err.field) == (path, line, field)
    assert fragment in message, message
    assert message == f"{prefix}{err.message}"


def test_malformed_kinds_are_many():
    assert len({b[0] for b in BAD}) == len(BAD) >= 20


def test_not_utf8(tmp_path):
    (tmp_path / "bin.yaml").write_bytes(b"name: x\nengine: \xff\n")
    with pytest.raises(SpecError, match=r"^bin\.yaml:2: not UTF-8"):
        load_spec("bin.yaml")


def test_missing_file():
    with pytest.raises(SpecError, match=r"^nope\.yaml: cannot read spec"):
        load_spec("nope.yaml")


def test_absolute_path_under_cwd_is_shown_relative(tmp_path):
    write(tmp_path, "name: x\n")
    with pytest.raises(SpecError) as info:
        load_spec(tmp_path / "slo_specs" / "x.yaml")
    assert str(info.value).startswith("slo_specs/x.yaml:1: ")


def test_spec_error_pickles():
    err = SpecError("slo_specs/x.yaml", 12, "layouts[1].tp", "3 does not divide 8 heads")
    assert str(err) == "slo_specs/x.yaml:12: layouts[1].tp: 3 does not divide 8 heads"
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) and isinstance(again, ValueError)


def test_spec_error_helper_points_at_field(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert str(spec.error("budgets.ttft.p99", "p99 3.1 s over budget")) == \
        "slo_specs/x.yaml:27: budgets.ttft.p99: p99 3.1 s over budget"
    assert spec.line_of("budgets.ttft.nope") == 27  # nearest enclosing field


def test_parse_spec_from_text():
    with pytest.raises(SpecError, match=r"^<string>:1: name: required field missing$"):
        parse_spec("engine: tiny\nworkload: {prompt_len: 8, gen_len: 4}\nlayouts: ['1x1']\n")


def test_load_specs_directory_and_unique_names(tmp_path):
    write(tmp_path, GOOD, "a.yaml")
    write(tmp_path, GOOD.replace("name: tp-vs-pp", "name: other"), "b.yml")
    (tmp_path / "slo_specs" / "notes.txt").write_text("not a spec")
    specs = load_specs(["slo_specs"])
    assert [s.name for s in specs] == ["tp-vs-pp", "other"]
    write(tmp_path, GOOD, "c.yaml")
    with pytest.raises(SpecError, match=r"^slo_specs/c\.yaml:1: name: duplicate spec name 'tp-vs-pp' "
                                        r"\(also in slo_specs/a\.yaml:1\)$"):
        load_specs(["slo_specs"])


# ---------------------------------------------------------------------------------------------
# The published schema


def test_schema_is_valid_draft_2020_12():
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_schema_in_sync_with_code():
    s = spec_schema()
    assert s["$defs"]["enginePreset"]["enum"] == list(PRESETS)
    assert s["properties"]["dtype"]["enum"] == list(DTYPE_BYTES)
    assert list(s["properties"]["budgets"]["properties"]["op_latency"]["properties"]) == list(OP_CLASSES)
    assert list(s["properties"]["tolerances"]["properties"]["latency"]["properties"]["per_op"]["properties"]) \
        == list(OP_CLASSES)
    assert s["properties"]["budgets"]["properties"]["preset"]["enum"] == list(SLO_PRESETS)
    budget_fields = [k for k in s["properties"]["budgets"]["properties"] if k not in ("hardware", "preset")]
    assert budget_fields == list(BUDGET_METRICS)
    assert s["properties"]["baseline"]["properties"]["metrics"]["items"]["enum"] == list(BUDGET_METRICS)


def test_schema_describes_every_field():
    s = spec_schema()

    def resolve(node):
        while "$ref" in node and "description" not in node:
            node = s["$defs"][node["$ref"].split("/")[-1]]
        return node

    missing = []

    def walk(node, where):
        if not isinstance(node, dict):
            return
        for key, sub in node.get("properties", {}).items():
            if "description" not in resolve(sub):
                missing.append(f"{where}.{key}")
            walk(resolve(sub), f"{where}.{key}")
        for i, sub in enumerate(node.get("anyOf", [])):
            walk(resolve(sub), f"{where}|{i}")
        if isinstance(node.get("items"), dict):
            walk(resolve(node["items"]), f"{where}[]")

    walk(s, "")
    for name, node in s["$defs"].items():
        walk(node, f"$defs.{name}")
    assert not missing


def test_import_does_not_pull_torch():
    code = "import sys, llmcomm_tests.spec; assert 'torch' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_control_character(tmp_path):
    path = write(tmp_path, HEAD + "layouts: ['1x1']\ndescription: \"a\x07b\"\n")
    with pytest.raises(SpecError, match=r"^slo_specs/x\.yaml:5: YAML error: .*#x0007"):
        load_spec(path)


def test_alias_bomb_is_refused(tmp_path):
    rows = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for prev, name in zip("abcde", "bcdef"):
        rows.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    with pytest.raises(SpecError, match="spec too large"):
        load_spec(write(tmp_path, "\n".join(rows) + "\n"))


def test_exponent_floats_are_numbers_as_in_yaml_1_2(tmp_path):
    path = tmp_path / "eps.yaml"
    path.write_text('name: eps\nengine: {preset: tiny, norm_eps: 1e-5}\nworkload: {batch: 1, prompt_len: 8, gen_len: 3}\n'
                    'layouts: ["1x1"]\ndescription: 2e3\n')
    with pytest.raises(SpecError, match="description"):  # a number where text belongs is still refused
        load_spec(path)
    path.write_text(path.read_text().replace("description: 2e3", "description: '2e3'"))
    assert load_spec(path).engine.norm_eps == 1e-5
    # a shape on the command line reads the same way, in YAML or as JSON (how ranks get theirs)
    from llmcomm_tests.engine.config import engine_from_text

    assert engine_from_text("{preset: tiny, norm_eps: 1e-5}").norm_eps == 1e-5
    assert engine_from_text('{"name": "tiny", "n_layers": 2, "hidden": 256, "n_heads": 8, "n_kv_heads": 4, '
                            '"ffn": 688, "vocab": 1024, "norm_eps": 1e-05}').norm_eps == 1e-5


def test_date_like_name_stays_a_string(tmp_path):
    spec = load_spec(write(tmp_path, "name: 2024-01-01\nengine: tiny\nworkload: {prompt_len: 8, gen_len: 4}\n"
                                     "layouts: ['1x1']\n"))
    assert spec.name == "2024-01-01"


def _doc_yaml_blocks() -> list[str]:
    text = (REPO / "docs" / "spec-format.md").read_text(encoding="utf-8")
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def test_docs_example_spec_loads():
    spec = parse_spec(_doc_yaml_blocks()[0], "docs/spec-format.md")
    assert [c.id for c in spec.cases()][:2] == ["tp4-pp1-b1-s128-g128", "tp4-pp1-b1-s128-g512"]
    assert len(spec.cases()) == 6


@pytest.mark.parametrize("index", range(1, len(_doc_yaml_blocks())))
def test_docs_fragments_load(index):
    fragment = yaml.safe_load(_doc_yaml_blocks()[index])
    base = {"name": "doc", "engine": "tiny", "workload": {"prompt_len": 8, "gen_len": 4}, "layouts": ["1x1"]}
    if "layouts" in fragment or "engine" in fragment:
        base["engine"] = "llama-3.1-8b"
    parse_spec(yaml.safe_dump({**base, **fragment}), f"docs/spec-format.md#{index}")


@pytest.mark.parametrize("folder", ["/etc/llmcomm", "../../elsewhere", "baselines/../../x"])
def test_a_spec_baseline_folder_stays_beside_the_spec(tmp_path, folder):
    """A spec may come from a merge request: ``baseline.file`` is a folder inside the spec's own."""
    path = tmp_path / "s.yaml"
    path.write_text(HEAD + f"layouts: ['1x1']\nbaseline:\n  threshold: 0.1\n  file: {folder}\n")
    with pytest.raises(SpecError, match=r"s\.yaml:\d+: baseline\.file: .*leaves the spec's folder"):
        load_spec(path)


def test_a_baseline_folder_that_leads_out_through_a_symlink_is_refused(tmp_path):
    from llmcomm_tests.judging.baseline import BaselineFileError, path_for

    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "baselines").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(BaselineFileError, match="leaves the spec's folder"):
        path_for("unused", "before", {}, "s", "case", "baselines", tmp_path / "specs")
    inside = path_for("unused", "before", {}, "s", "case", "mine", tmp_path / "specs")
    assert inside == (tmp_path / "specs" / "mine" / "before" / "s" / "case.json").resolve()
