"""The pytest plugin, driven through pytester: collection, selection, skips, failure tables,
malformed specs, xdist, reports."""

import json
import re
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from interrupt import default_sigint
from test_spec import BAD  # the malformed-spec catalogue of the spec loader's tests

# Small and quick: 2 layers, every layout class, 2 batch sizes → 8 cases.
SPEC = """\
name: mini
engine: {preset: tiny, n_layers: 2}
workload: {batch: [1, 2], prompt_len: 8, gen_len: 3}
layouts: ["1x1", "2x1", "1x2", "2x2"]
repeats: 2
warmup: 0
"""


@pytest.fixture
def wide_profile(tmp_path_factory) -> Path:
    """This host's profile with bounds so wide that latency never fails: these tests are about the
    plugin's mechanics, not this host's noise."""
    from llmcomm_tests.analytic.hardware import PROFILE_DIR

    data = yaml.safe_load((PROFILE_DIR / "cpu-loopback.yaml").read_text())
    data["name"] = "wide"
    for tier in data["tiers"].values():
        tier["k_hi"], tier["slack_s"] = 1000.0, 10.0
        tier["band_lo"], tier["band_hi"], tier["tail_k"] = 1e-6, 1e6, 1e6
        for by_group in tier["ops"].values():
            for fit in by_group.values():
                for key in ("k_hi", "slack_s", "band_lo", "band_hi", "tail_k", "variants"):
                    fit.pop(key, None)
    path = tmp_path_factory.mktemp("profiles") / "wide.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def specs(pytester, wide_profile):
    pytester.makefile(".yaml", **{"slo_specs/mini": SPEC})
    pytester.makeini(f"[pytest]\nllmcomm_hardware = {wide_profile}\nllmcomm_report_dir = reports\n")
    return pytester


QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")  # hypothesis' summary hook costs ~1 s a run


def run(pytester, *args):
    return pytester.runpytest_subprocess(*QUIET, *args)


def test_collection_ids_and_markers(specs):
    result = run(specs, "--collect-only", "-q")
    result.stdout.fnmatch_lines(["slo_specs/mini.yaml::tp1-pp1-b1-s8-g3", "slo_specs/mini.yaml::tp2-pp2-b2-s8-g3",
                                 "8 tests collected*"])
    run(specs, "--collect-only", "-q", "-m", "hybrid").stdout.fnmatch_lines(["*tp2-pp2-b1*", "*tp2-pp2-b2*",
                                                                           "2/8 tests collected*"])
    run(specs, "--collect-only", "-q", "-m", "pp").stdout.fnmatch_lines(["*tp1-pp2-b1*", "2/8 tests collected*"])
    run(specs, "--collect-only", "-q", "-k", "tp2-pp1 and b2").stdout.fnmatch_lines(["*tp2-pp1-b2-s8-g3",
                                                                                    "1/8 tests collected*"])


def test_duplicate_case_ids_are_refused(pytester):
    pytester.makefile(".yaml", **{"slo_specs/dup": SPEC.replace('"2x2"]', '"2x2", {tp: 2, pp: 2}]')})
    result = run(pytester, "--collect-only", "-q")
    assert any(ln.startswith("slo_specs/dup.yaml:4: layouts[4]: duplicate case id tp2-pp2-b1-s8-g3")
               for ln in result.stdout.lines), result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_run_passes_and_skips_what_needs_more_ranks(specs):
    result = run(specs, "--gpus", "2", "-rs")
    result.assert_outcomes(passed=6, skipped=2)
    result.stdout.fnmatch_lines(["llmcomm ranks: 2 (--gpus 2*",
                                 "SKIPPED [[]2] slo_specs/mini.yaml:4: needs 4 ranks (tp 2 x pp 2); 2 available: --gpus 2:"
                                 " no 2 CUDA devices here, ranks are CPU processes on gloo"])


def test_failing_volume_check_shows_the_table(specs):
    result = run(specs, "-k", "tp2-pp1-b1", "--llmcomm-inject", "all_reduce@attn:extra=1")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "mini[tp2-pp1-b1-s8-g3]: 2 check(s) failed" in out
    result.stdout.fnmatch_lines(["check*op / metric*measured (p50 / p99, n)*model*bound*budget*verdict",
                                 "volume*all_reduce decode attn*x16 *x8 *FAIL (count 16 != 8, bytes*",
                                 "volume*all_reduce prefill attn*x8 *x4 *FAIL (count 8 != 4*"])


def test_failing_budget_shows_the_table(specs):
    specs.makefile(".yaml", **{"slo_specs/mini": SPEC + "budgets:\n  hardware: wide\n  ttft: {p99: 1us}\n"
                                                       "  bytes_per_token: {max: 1 KiB}\n"})
    result = run(specs, "-k", "tp1-pp2-b1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["budget*ttft p99*p99 <= 1.0us*FAIL (p99 *ms > 1.0us*",
                                 "budget*bytes_per_token max*max <= 1,024B*FAIL (max *B > 1,024B)*"])


def test_budgets_for_other_hardware_are_not_applicable(specs):
    specs.makefile(".yaml", **{"slo_specs/mini": SPEC + "budgets:\n  hardware: h100-nvlink4\n  ttft: {p99: 1us}\n"})
    result = run(specs, "-k", "tp1-pp1-b1", "-rA")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["budget*ttft*N/A (written for h100-nvlink4; this run is on wide)"])


def test_latency_tests_share_significance_across_the_sessions_timed_cases(specs):
    """The interval's confidence is 1 − 5 % / (timed cases × tests in the case): selecting two
    cases instead of one halves each test's level (cases skipped here are not counted)."""
    def confidences(*args):
        run(specs, *args).assert_outcomes(passed=1 if len(args) == 2 else 2, skipped=0 if len(args) == 2 else 2)
        report = json.loads((specs.path / "reports" / "llmcomm-report.json").read_text())
        out = {}
        for item in report["items"]:
            rows = [r for r in item["verdict"]["rows"] if r["check"] == "latency"]
            tests = sum(r["name"].endswith(("transfer centre", "transfer p90", "transfer")) for r in rows)
            shown = {float(m) for r in rows for m in re.findall(r"\[([0-9.]+)% CI", r["detail"] or "")}
            out[item["case_id"]] = (tests, shown)
        return out

    (alone,) = confidences("-k", "tp2-pp1-b1").values()
    pair = confidences("--gpus", "2", "-k", "tp2-pp1 or tp2-pp2").values()  # the 4-rank cases skip
    for cases, (tests, shown) in ((1, alone), *((2, p) for p in pair)):
        assert shown == {round(100 * (1 - 0.05 / cases / tests), 1)}, (cases, tests, shown)


@pytest.mark.parametrize("kind, text, line, field, fragment", BAD, ids=[b[0] for b in BAD])
def test_malformed_spec_is_one_located_error_and_others_still_run(pytester, kind, text, line, field, fragment):
    pytester.makefile(".yaml", **{"slo_specs/bad": text, "slo_specs/good": SPEC})
    result = pytester.runpytest_inprocess(*QUIET, "--collect-only", "-q")  # no ranks: in-process is fine
    where = f"slo_specs/bad.yaml:{line}: " + (f"{field}: " if field else "")
    errors = [ln for ln in result.stdout.lines if ln.startswith("slo_specs/bad.yaml:")]
    assert len(errors) == 1 and errors[0].startswith(where) and fragment in errors[0], result.stdout.str()
    assert "Traceback" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*slo_specs/good.yaml::tp1-pp1-b1-s8-g3*", "8 tests collected, 1 error*"])


def test_two_files_with_one_spec_name_are_a_collection_error_naming_both(pytester):
    """A spec name prefixes test ids and keys baselines: a second file may not reuse it."""
    pytester.makefile(".yaml", **{"slo_specs/a": SPEC, "slo_specs/sub/b": "# the same spec, copied\n" + SPEC})
    result = pytester.runpytest_inprocess(*QUIET, "--collect-only", "-q")
    result.stdout.fnmatch_lines(["slo_specs/sub/b.yaml:2: name: duplicate spec name 'mini' (also in slo_specs/a.yaml:1)",
                                 "8 tests collected, 1 error*"])
    assert "Traceback" not in result.stdout.str()


def test_a_spec_named_on_the_command_line_is_collected_wherever_it_lives(pytester):
    pytester.makefile(".yaml", **{"elsewhere/mine": SPEC, "elsewhere/not-named": SPEC.replace("mini", "other")})
    result = pytester.runpytest_inprocess(*QUIET, "--collect-only", "-q", "elsewhere/mine.yaml")
    result.stdout.fnmatch_lines(["elsewhere/mine.yaml::tp1-pp1-b1-s8-g3", "8 tests collected*"])
    # a folder outside the spec folders is still not searched for YAML (other tools' files live there)
    pytester.runpytest_inprocess(*QUIET, "--collect-only", "-q", "elsewhere").stdout.fnmatch_lines(["*no tests*"])


def test_xdist_runs_cases_and_the_controller_writes_reports(specs):
    result = run(specs, "-n", "2", "-k", "b1")
    result.assert_outcomes(passed=4)
    report = json.loads((specs.path / "reports" / "llmcomm-report.json").read_text())
    assert report["complete"] and sorted(i["case_id"] for i in report["items"]) == [
        "tp1-pp1-b1-s8-g3", "tp1-pp2-b1-s8-g3", "tp2-pp1-b1-s8-g3", "tp2-pp2-b1-s8-g3"]
    assert all(r["verdict"] != "fail" for i in report["items"] for r in i["verdict"]["rows"])
    assert all(bool(i["run"]["volume"]) == (i["case_id"] != "tp1-pp1-b1-s8-g3") for i in report["items"])


def test_junit_has_one_testcase_per_item_with_properties(specs):
    from junitparser import JUnitXml
    from junitparser.cli import verify

    run(specs, "-k", "b1").assert_outcomes(passed=4)
    path = specs.path / "reports" / "junit.xml"
    xml = JUnitXml.fromfile(str(path))
    suite = next(iter(xml))
    cases = list(suite)
    assert len(cases) == 4 and {c.name for c in cases} == {"tp1-pp1-b1-s8-g3", "tp1-pp2-b1-s8-g3",
                                                           "tp2-pp1-b1-s8-g3", "tp2-pp2-b1-s8-g3"}
    suite_props = {p.name: p.value for p in suite.properties()}
    assert suite_props["llmcomm.env.torch"].startswith("2.") and suite_props["llmcomm.backend"] == "gloo"
    text = path.read_text()
    assert text.count('name="llmcomm.bytes_per_token"') == 4 and text.count('name="llmcomm.wire_bytes.model"') == 4
    assert re.search(r"<system-out>check +op / metric[^<]*volume +all_reduce decode attn", text)  # the table
    assert verify([str(path)]) == 0


def test_reports_are_written_when_a_rank_crashes(specs):
    result = run(specs, "-k", "tp2-pp1-b1", "--llmcomm-inject", "all_reduce:crash=1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*rank 1 failed*", "*planted crash (all_reduce:crash=1) on rank 1*"])
    report = json.loads((specs.path / "reports" / "llmcomm-report.json").read_text())
    assert report["items"][0]["error"].startswith("rank 1 failed")
    from junitparser import JUnitXml

    case = next(iter(next(iter(JUnitXml.fromfile(str(specs.path / "reports" / "junit.xml"))))))
    assert not case.is_passed


def test_reports_stay_valid_when_interrupted(specs):
    """Ctrl-C in the middle of a session: JUnit and JSON still parse, no rank survives."""
    from junitparser import JUnitXml

    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"], cwd=specs.path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=default_sigint)
    json_path = specs.path / "reports" / "llmcomm-report.json"
    items_path = specs.path / "reports" / "llmcomm-items.jsonl"
    deadline = time.monotonic() + 120
    while not (items_path.exists() and items_path.read_text()) and time.monotonic() < deadline:
        time.sleep(0.1)
    ranks = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert b"KeyboardInterrupt" in out
    report = json.loads(json_path.read_text())
    assert report["items"] and report["complete"] is False and report["exitstatus"] == 2
    logged = [json.loads(line) for line in (specs.path / "reports" / "llmcomm-items.jsonl").read_text().splitlines()]
    assert [i["case_id"] for i in logged] == [i["case_id"] for i in report["items"]]
    JUnitXml.fromfile(str(specs.path / "reports" / "junit.xml"))
    # every rank and the fork server go on their own (a busy host may take a few seconds to reap them)
    _, alive = psutil.wait_procs(ranks, timeout=30)
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def test_sigterm_mid_case_ends_pytest_as_sigterm_does_and_leaves_no_process(specs):
    """SIGTERM while ranks run (rank 0 hangs at its first send): the session closes its fork server
    and ranks once, then pytest ends by the signal."""
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *QUIET, "-q", "-k", "tp1-pp2-b1",
                             "--llmcomm-inject", "send:hang=0"], cwd=specs.path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pytest_process = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    started = []
    while time.monotonic() < deadline and proc.poll() is None:
        started = pytest_process.children(recursive=True)
        fork_servers = [p for p in started if "forkserver" in " ".join(_cmdline(p))]
        if fork_servers and len(fork_servers[0].children()) == 2:
            break
        time.sleep(0.1)
    else:
        proc.kill()
        pytest.fail(f"the case's ranks did not start: {proc.communicate()[0].decode()[-2000:]}")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, out.decode()[-2000:]
    _, alive = psutil.wait_procs(started, timeout=10)
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def test_loading_the_plugin_does_not_import_torch(specs):
    specs.makeconftest("import sys\n\ndef pytest_collection_finish(session):\n"
                       "    print('TORCH_LOADED', 'torch' in sys.modules)\n")
    result = run(specs, "--collect-only", "-q", "-s")
    result.stdout.fnmatch_lines(["TORCH_LOADED False"])
    code = "import sys, llmcomm_tests.suite.plugin, llmcomm_tests.spec; print('torch' in sys.modules)"
    assert subprocess.check_output([sys.executable, "-c", code]).strip() == b"False"


def test_bad_option_value_is_a_usage_error(specs):
    result = run(specs, "--gpus", "many", "--collect-only")
    result.stderr.fnmatch_lines(["*llmcomm: --gpus: expected a whole number, got 'many'*"])
    assert "invalid literal" not in result.stderr.str()
    run(specs, "--gpus", "0", "--collect-only").stderr.fnmatch_lines(["*llmcomm: --gpus: must be >= 1, got 0*"])
    env_result = specs.run(sys.executable, "-m", "pytest", "--collect-only", "-q")
    assert env_result.ret == 0
    os.environ["LLMCOMM_BACKEND"] = "mpi"
    try:
        result = run(specs, "--collect-only")
        result.stderr.fnmatch_lines(["*llmcomm: LLMCOMM_BACKEND: must be auto, gloo or nccl, got 'mpi'*"])
    finally:
        del os.environ["LLMCOMM_BACKEND"]
