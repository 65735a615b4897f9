"""The command line as a user meets it: run, its refusals, torchrun's entry point, predict."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "llmcomm_tests.commands"]
SCHEMA = Path(__file__).parent.parent / "llmcomm_tests" / "spec" / "schema" / "slo-spec.schema.json"  # JSON, not rows


def test_run_prints_a_summary_and_writes_the_document(tmp_path):
    out = tmp_path / "run.json"
    proc = subprocess.run(CLI + ["run", "--engine", "tiny", "--tp", "2", "--pp", "2", "--batch", "2",
                                 "--prompt-len", "16", "--gen-len", "4", "--repeats", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "layout tp=2 pp=2 (4 ranks, gloo)" in proc.stdout and "TTFT" in proc.stdout and "TPOT" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["schema"] == "llmcomm.run/2"
    assert {k: doc["case"][k] for k in ("tp", "pp", "batch", "prompt_len", "gen_len", "dtype", "backend",
                                        "world_size")} == {"tp": 2, "pp": 2, "batch": 2, "prompt_len": 16,
                                                           "gen_len": 4, "dtype": "fp32", "backend": "gloo",
                                                           "world_size": 4}
    assert doc["case"]["engine"]["hidden"] == 256
    assert doc["env"]["torch"].startswith("2.") and doc["env"]["variables"]["GLOO_SOCKET_IFNAME"] == "lo"
    assert len(doc["tokens"]) == 2 and all(len(t) == 4 for t in doc["tokens"])
    m = doc["metrics"]
    assert len(m["ttft"]["samples"]) == 2 and len(m["itl"]["samples"]) == 2 * 3
    for ttft, tpot, e2e in zip(m["ttft"]["samples"], m["tpot"]["samples"], m["e2e"]["samples"]):
        assert 0 < ttft <= e2e and tpot == pytest.approx((e2e - ttft) / 3)
    assert doc["ops"] and doc["volume"] and doc["comm"]["bytes_per_token"] > 0
    assert doc["records"] is None  # only with --keep-records
    assert sum(s["count"] for s in doc["ops"]) == 2 * sum(r["count"] for r in doc["volume"])  # 2 repetitions


@pytest.mark.parametrize("args, reason", [
    (["--tp", "3"], "tp=3 does not divide 8 attention heads"),
    (["--pp", "5"], "pp=5 exceeds 4 layers"),
    (["--tp", "2", "--pp", "2", "--ranks", "2"], "needs 4 ranks, only 2 available"),
    (["--inject", "all_reduce:delay=fast"], "bad fault 'all_reduce:delay=fast'"),
    pytest.param(["--tp", "2", "--backend", "nccl"], "backend nccl needs one CUDA device per rank: 2 ranks, 0 devices",
                 marks=pytest.mark.skipif(os.path.isdir("/proc/driver/nvidia/gpus"), reason="this host has GPUs")),
])
def test_impossible_runs_are_refused_before_launch_with_one_line(args, reason):
    proc = subprocess.run(CLI + ["run"] + args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert reason in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_rank_entry_point_runs_under_torchrun(tmp_path):
    """Multi-node runs use torchrun's rendezvous; the same rank code must work under it."""
    out = tmp_path / "torchrun.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "llmcomm_tests.runtime.torchrun_entry", "--tp", "2", "--prompt-len", "8", "--gen-len", "3",
                           "--repeats", "1", "--keep-records", "--json", str(out)], capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["case"]["world_size"] == 2 and {o["rank"] for o in doc["records"]} == {0, 1}
    single = subprocess.run(CLI + ["run", "--prompt-len", "8", "--gen-len", "3", "--repeats", "1", "--json",
                                   str(tmp_path / "one.json")], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0
    assert doc["tokens"] == json.loads((tmp_path / "one.json").read_text())["tokens"]


def test_help_does_not_import_torch():
    code = "import sys; from llmcomm_tests.commands import main\ntry: main(['--help'])\nexcept SystemExit: pass\n" \
           "print('torch' in sys.modules)"
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip().endswith("False")


# Bad input of every subcommand, as a new user types it: one line naming what is wrong, exit 2, and
# nothing launched (the launcher and the run are replaced by tripwires below).
BAD_INPUT = [
    (["run", "--gen-len", "0"], "--gen-len: must be >= 1, got 0"),
    (["run", "--prompt-len", "-3"], "--prompt-len: must be >= 1, got -3"),
    (["run", "--batch", "two"], "--batch: expected a whole number, got 'two'"),
    (["run", "--repeats", "0"], "--repeats: must be >= 1"),
    (["run", "--warmup", "-1"], "--warmup: must be >= 0"),
    (["run", "--tp", "0"], "--tp: must be >= 1"),
    (["run", "--timeout", "0"], "--timeout: must be a finite number > 0"),
    (["run", "--json", "missing-folder/x.json"], "cannot write missing-folder/x.json: folder 'missing-folder' does not exist"),
    (["run", "--engine", "tiny", "--prompt-len", "100000"], "prompt_len + gen_len = 100000 + 8 exceeds the context of tiny"),
    (["run", "--engine", "{preset: tiny, n_layers: 2}", "--prompt-len", "4090", "--gen-len", "8"], "exceeds the context"),
    (["run", "--engine", "nope"], "--engine: unknown engine preset 'nope'"),
    (["run", "--engine", "{preset: tiny, hidden: 250}"], "hidden 250 is not divisible by n_heads 8"),
    (["run", "--engine", "{preset: tiny, n_layers: two}"], "engine field n_layers must be an integer, got 'two'"),
    (["run", "--engine", "{preset: tiny"], "engine mapping is not valid YAML"),
    (["run", "--engine", "missing-shape.yaml"], "cannot read engine file missing-shape.yaml"),
    (["run", "--tp", "3"], "tp=3 does not divide 8 attention heads"),
    (["run", "--inject", "all_reduce:delay=fast"], "bad fault 'all_reduce:delay=fast'"),
    (["predict", "--engine", "nope"], "--engine: unknown engine preset 'nope'"),
    (["predict", "--gen-len", "0"], "--gen-len: must be >= 1"),
    (["predict", "--engine", "llama-3.1-8b", "--prompt-len", "200000"], "exceeds the context of llama-3.1-8b: max_position 131072"),
    (["predict", "--layouts", "3x1"], "does not divide"),
    (["predict", "--hardware", "nope"], "unknown hardware profile 'nope'"),
    (["predict", "--json", "missing-folder/p.json"], "folder 'missing-folder' does not exist"),
    (["calibrate", "--world-size", "1"], "--world-size: 1: a communication sweep needs at least 2 ranks"),
    (["calibrate", "--world-size", "2,x"], "--world-size: expected a whole number, got 'x'"),
    (["calibrate", "--sizes", "1Q"], "--sizes: bad size '1Q'"),
    (["calibrate", "--repeats", "0"], "--repeats: must be >= 1"),
    (["calibrate", "--ops", "all_reduce,bogus"], "--ops: unknown op(s) bogus"),
    (["calibrate", "--base", "nope"], "--base: unknown hardware profile 'nope'"),
    (["calibrate", "--rows", "missing.json"], "cannot read missing.json"),
    (["calibrate", "--rows", "/dev/null"], "/dev/null: not JSON"),
    (["calibrate", "--rows", str(SCHEMA)], "not `llmcomm bench-comm --json` rows"),
    (["calibrate", "--spread-from", str(SCHEMA)], "not an `llmcomm run --json` document"),
    (["calibrate", "--spread-quantile", "2"], "--spread-quantile: must be between 0 and 1"),
    (["calibrate", "--out", "missing-folder/p.yaml"], "folder 'missing-folder' does not exist"),
    (["bench-comm", "--sizes", "1Q"], "--sizes: bad size '1Q': a byte count such as 4096, 64K or 16M"),
    (["bench-comm", "--sizes", "0"], "--sizes: bad size '0'"),
    (["bench-comm", "--world-size", "0"], "--world-size: must be >= 1"),
    (["bench-comm", "--ops", "bogus"], "--ops: unknown op(s) bogus"),
    (["bench-comm", "--world-size", "1", "--ops", "send_recv"], "send_recv needs --world-size >= 2"),
    (["bench-comm", "--json", "missing-folder/b.json"], "folder 'missing-folder' does not exist"),
    (["report", "missing-reports"], "missing-reports/llmcomm-report.json not found"),
    (["report", ".", "--out", "missing-folder/r.html"], "folder 'missing-folder' does not exist"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv, fragment", BAD_INPUT, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_input_is_one_line_and_exit_2_before_any_launch(argv, fragment, tmp_path, monkeypatch, capsys):
    from llmcomm_tests.runtime import launch, measure
    from llmcomm_tests.commands import main

    def tripwire(*args, **kwargs):
        raise AssertionError(f"launched despite bad input {argv}")

    monkeypatch.setattr(launch, "launch", tripwire)
    monkeypatch.setattr(measure, "run_engine", tripwire)
    monkeypatch.chdir(tmp_path)
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's refusals
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and fragment in err, err
    assert err.startswith("llmcomm") and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no folder, file or partial output left behind


def test_the_issue_examples_refuse_in_one_line_from_the_real_command_line(tmp_path):
    for argv in (["run", "--gen-len", "0"], ["bench-comm", "--sizes", "1Q"], ["calibrate", "--world-size", "1"],
                 ["run", "--json", "missing-folder/x.json"], ["run", "--engine", "tiny", "--prompt-len", "100000"]):
        proc = subprocess.run(CLI + argv, capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, (argv, proc.stderr)


def test_run_engine_takes_the_shape_mapping_specs_take(tmp_path):
    out = tmp_path / "run.json"
    proc = subprocess.run(CLI + ["run", "--engine", "{preset: tiny, n_layers: 2, name: tiny-2}", "--tp", "2",
                                 "--prompt-len", "8", "--gen-len", "2", "--repeats", "1", "--warmup", "0",
                                 "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "engine=tiny-2" in proc.stdout
    engine = json.loads(out.read_text())["case"]["engine"]
    assert engine["n_layers"] == 2 and engine["hidden"] == 256 and engine["name"] == "tiny-2"


def test_engine_text_forms_are_one_shape(tmp_path):
    """What a spec's engine: takes, on the command line: preset, YAML or JSON mapping, or a file."""
    from dataclasses import replace

    from llmcomm_tests.engine.config import PRESETS, engine_from_text

    shape = tmp_path / "shape.yaml"
    shape.write_text("preset: tiny\nn_layers: 2\n")
    forms = ["{preset: tiny, n_layers: 2}", '{"preset": "tiny", "n_layers": 2}', str(shape)]
    assert {engine_from_text(f) for f in forms} == {replace(PRESETS["tiny"], n_layers=2)}
    assert engine_from_text(" tiny ") == PRESETS["tiny"]
