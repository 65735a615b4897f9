"""The A/B gate end to end on gloo: real arm servers, real interpreters, real ranks.

Slow-ish (each comparison is 10+ interleaved pairs of a tiny TP2 case): one test per behaviour."""

import json
import re
import sys

import pytest

# One TP2 case of a 2-layer tiny engine: ~1 s a run on this host.
SPEC = """\
name: abmini
engine: {preset: tiny, n_layers: 2}
workload: {batch: 1, prompt_len: 8, gen_len: 4}
layouts: ["2x1"]
repeats: 3
warmup: 1
"""
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


@pytest.fixture(scope="module")
def other_python(tmp_path_factory) -> str:
    """A second environment: a venv over this one's packages, whatever kind this one is (its own
    interpreter path and site-packages; the gate puts this checkout's llmcomm_tests on its path)."""
    from llmcomm_tests.judging.ab.overlay import overlay_venv

    return overlay_venv(tmp_path_factory.mktemp("arm-b") / "venv")


@pytest.fixture
def abspec(pytester):
    pytester.makefile(".yaml", **{"slo_specs/abmini": SPEC})
    pytester.makeini("[pytest]\nllmcomm_report_dir = reports\n")
    return pytester


def test_each_arm_runs_its_own_interpreter(other_python):
    from llmcomm_tests.judging.ab.arms import Arm, env_difference

    a, b = Arm("A", sys.executable), Arm("B", other_python)
    try:
        import torch

        assert a.env.executable == a.env.rank_executable == sys.executable
        assert b.env.executable == b.env.rank_executable == other_python  # the ranks, not just the server
        assert a.env.rank_torch == b.env.rank_torch == str(torch.__version__)
        assert other_python in env_difference(a.env, b.env)
        assert env_difference(a.env, a.env).startswith("A/A")
    finally:
        a.close()
        b.close()
    assert a.proc.returncode == 0 and b.proc.returncode == 0


def test_unchanged_arm_passes(abspec, other_python):
    result = abspec.runpytest_subprocess(*QUIET, "-rA", f"--llmcomm-ab={other_python}", "--llmcomm-ab-pairs=10")
    result.assert_outcomes(passed=1)
    out = result.stdout.str()
    assert f"/{other_python.split('/', 1)[1]}" in out or other_python in out


def test_planted_delay_in_arm_b_fails_the_op_row_with_change_and_interval(abspec):
    result = abspec.runpytest_subprocess(*QUIET, f"--llmcomm-ab={sys.executable}", "--llmcomm-ab-pairs=20",
                                         "--llmcomm-inject=all_reduce:delay=100%")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    # The item fails on rows slower in B; the faulted op's row carries its change and interval.
    # (It is not always among the failing rows: the gate stops as soon as one row is settled as
    # slower, which on a loaded host can be TTFT before the all-reduce row.)
    failing = [ln for ln in out.splitlines() if "FAIL (slower in B: +" in ln]
    assert failing and all("CI " in ln and "pairs" in ln for ln in failing)
    line = next(ln for ln in out.splitlines() if "ab op all_reduce decode /2 transfer" in ln)
    assert re.search(r"\+\d+\.\d% \(n=\d+\)", line) and "CI " in line
    assert "ab environment" in out and "A/A: both arms" in out  # the environment heads the failure
    assert "ab volume" not in "".join(ln for ln in out.splitlines() if "FAIL" in ln)  # bytes unchanged
    # the schedule and its seed are in the session report
    report = json.loads((abspec.path / "reports" / "llmcomm-report.json").read_text())
    (item,) = report["items"]
    ab = item["ab"]
    schedule = ab["schedule"]
    assert schedule["seed"] == 0 and schedule["kept"] == ab["pairs"] >= 10
    assert {p["order"] for p in schedule["pairs"]} == {"AB", "BA"}


def test_extra_collective_in_arm_b_fails_the_volume_row_exactly(abspec):
    result = abspec.runpytest_subprocess(*QUIET, f"--llmcomm-ab={sys.executable}", "--llmcomm-ab-pairs=10",
                                         "--llmcomm-inject=all_reduce@attn:extra=1")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    # 2 layers x (1 prefill + 3 decode steps) x 2 ranks; one extra call per call in arm B
    assert "ab volume all_reduce decode attn" in out and "calls 12 → 24" in out
    assert "ab volume all_reduce prefill attn" in out and "calls 4 → 8" in out
    assert "ab volume all_reduce decode mlp" not in out
    # exact rows need no statistics: the gate stops once an AB and a BA pair ran, not after 10
    report = json.loads((abspec.path / "reports" / "llmcomm-report.json").read_text())
    (item,) = report["items"]
    assert item["ab"]["pairs"] == 2 and item["ab"]["stopped"] == "bytes or counts differ between the arms"
