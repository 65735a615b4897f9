"""The upgrade gate: baselines saved and compared through the plugin, and the statistics."""

import json
import math
import random

import pytest

from llmcomm_tests.judging.baseline import compare_samples, env_changes, hardware_key, judge
from test_plugin import QUIET, SPEC, wide_profile  # noqa: F401  (fixture)

# A loose time threshold (+500 %): these tests are about the gate's mechanics on a noisy 2-core
# host; its statistical power is measured by benchmarks/gate_selftest.py.
GATE_SPEC = SPEC.replace('layouts: ["1x1", "2x1", "1x2", "2x2"]', 'layouts: ["2x1", "1x2"]').replace(
    "repeats: 2", "repeats: 3") + "baseline: {threshold: 5.0}\n"


@pytest.fixture
def gate(pytester, wide_profile):  # noqa: F811
    pytester.makefile(".yaml", **{"slo_specs/gate": GATE_SPEC})
    pytester.makeini(f"[pytest]\nllmcomm_hardware = {wide_profile}\n")
    result = pytester.runpytest_subprocess(*QUIET, "-k", "b1", "--llmcomm-baseline-save", "before")
    result.assert_outcomes(passed=2)
    return pytester


def compare(pytester, *args):
    return pytester.runpytest_subprocess(*QUIET, "-k", "b1", "--llmcomm-baseline-compare", "before", *args)


def test_save_writes_one_file_per_case_under_the_hardware_key(gate):
    files = sorted(p.relative_to(gate.path).as_posix() for p in (gate.path / ".llmcomm").rglob("*.json"))
    assert len(files) == 2 and files[0].startswith(".llmcomm/baselines/gloo-1xcpu_")
    assert [f.split("/", 3)[3] for f in files] == ["before/mini/tp1-pp2-b1-s8-g3.json",
                                                   "before/mini/tp2-pp1-b1-s8-g3.json"]
    doc = json.loads((gate.path / files[0]).read_text())
    assert doc["schema"] == "llmcomm.baseline/3" and doc["volume"] and len(doc["runs"]) == 1
    assert len(doc["runs"][0]["times"]["ttft"]) == 3


def test_saving_again_adds_a_run(gate):
    result = gate.runpytest_subprocess(*QUIET, "-k", "b1", "--llmcomm-baseline-save", "before", "-rA")
    result.stdout.fnmatch_lines(["baseline*saved to before*PASS (2 run(s) in *"])
    docs = [json.loads(p.read_text()) for p in (gate.path / ".llmcomm").rglob("*.json")]
    assert [len(d["runs"]) for d in docs] == [2, 2]


def test_unchanged_run_passes(gate):
    result = compare(gate, "-rA")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["baseline*volume (all op classes)*PASS (identical to the baseline)*"])


def add_sessions(pytester, drifts):
    """Copies of each stored run as if saved in other sessions whose times drifted by ``drifts``
    (simulated records: the drift between those sessions is then measured, and known)."""
    for path in (pytester.path / ".llmcomm").rglob("*.json"):
        doc = json.loads(path.read_text())
        first = doc["runs"][0]
        doc["runs"] += [dict(first, session=f"earlier-{i}", times={k: [x * d for x in v] for k, v in first["times"].items()})
                        for i, d in enumerate(drifts)]
        path.write_text(json.dumps(doc))


def test_unchanged_rerun_against_one_other_session_is_not_judged_on_time(gate):
    """Saved once, compared once (another session): the drift between sessions was never measured,
    so the time rows say n/a and why; bytes and counts are still judged."""
    result = compare(gate, "-rA")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["baseline*tpot*N/A (1 baseline session, this run from another: the drift between "
                                 "sessions is not measured*",
                                 "baseline*volume (all op classes)*PASS (identical to the baseline)*"])


def test_planted_delay_fails_the_right_item(gate):
    add_sessions(gate, [0.9, 1.1, 1.0, 0.95])  # five sessions whose centres scatter by about 7 %
    result = compare(gate, "--llmcomm-inject", "all_reduce:delay=30ms")
    result.assert_outcomes(failed=2)  # only the TP case has all-reduces: the PP case planted nothing
    result.stdout.fnmatch_lines(["mini[[]tp2-pp1-b1-s8-g3]: * check(s) failed",
                                 "baseline*op all_reduce decode /2*FAIL (slower +*% [[]*CI*; detects >= *"])
    result.stdout.fnmatch_lines(["mini[[]tp1-pp2-b1-s8-g3]: 1 check(s) failed",
                                 "run*inject*FAIL (fault all_reduce:delay=30ms never fired in tp1-pp2-b1-s8-g3)"])


def test_extra_collective_fails_on_volume(gate):
    result = compare(gate, "--llmcomm-inject", "all_reduce@mlp:extra=1")
    result.assert_outcomes(failed=2)  # the PP case: the fault never fired
    result.stdout.fnmatch_lines(["baseline*volume all_reduce decode mlp*x16 *x8 *FAIL (bytes or count changed*"])


def test_larger_message_fails_on_volume(gate):
    result = compare(gate, "--llmcomm-inject", "all_reduce@mlp:size=2")
    result.assert_outcomes(failed=2)  # the PP case: the fault never fired
    result.stdout.fnmatch_lines(["mini[[]tp2-pp1-b1-s8-g3]*",
                                 "baseline*volume all_reduce decode mlp*x8 16,384B*x8 8,192B*FAIL*"])


def test_changed_environment_is_named(gate):
    for path in (gate.path / ".llmcomm").rglob("*.json"):
        doc = json.loads(path.read_text())
        doc["runs"][-1]["env"]["torch"], doc["runs"][-1]["env"]["nccl"] = "2.12.0", "2.21.5"
        path.write_text(json.dumps(doc))
    result = compare(gate, "--llmcomm-inject", "all_reduce@mlp:extra=1", "-rA")
    result.stdout.fnmatch_lines(["*baseline*environment*FAIL (changed since the baseline: torch 2.12.0 → 2.*; "
                                 "nccl 2.21.5 → None*"])
    result.stdout.fnmatch_lines(["*baseline*environment*PASS (changed, no effect found: torch 2.12.0 → *"])


def test_missing_baseline_is_a_failure(gate):
    result = gate.runpytest_subprocess(*QUIET, "-k", "b1", "--llmcomm-baseline-compare", "never-saved")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*baseline never-saved*FAIL (no baseline at *never-saved*"])


# -- statistics -----------------------------------------------------------------------------------


def lognormal(n, median, sigma, seed):
    rng = random.Random(seed)
    return [rng.lognormvariate(math.log(median), sigma) for _ in range(n)]


def test_same_distribution_is_not_flagged():
    stats = compare_samples([lognormal(300, 1e-3, 0.3, 1)], lognormal(300, 1e-3, 0.3, 2), rows_in_family=10)
    assert stats["ci"][0] < 0 < stats["ci"][1] and not stats["drift_measured"]
    row = judge("x", stats, 0.1, None)
    assert row.verdict == "pass" and "1 baseline session: run-to-run drift not measured" in row.detail


def test_clear_slowdown_is_flagged_with_its_size():
    stats = compare_samples([lognormal(300, 1e-3, 0.1, 1)], [x * 1.3 for x in lognormal(300, 1e-3, 0.1, 2)])
    assert 0.2 < stats["change"] < 0.4 and stats["ci"][0] > 0.1
    row = judge("x", stats, 0.1, None)
    assert row.verdict == "fail" and row.detail.startswith("slower +")


def test_large_improvement_flags_a_stale_baseline():
    stats = compare_samples([lognormal(200, 1e-3, 0.1, 1)], lognormal(200, 0.5e-3, 0.1, 2))
    assert judge("x", stats, 0.1, None).detail.startswith("much faster, baseline stale?")


def test_run_to_run_drift_widens_the_interval():
    """Five baseline runs whose typical time drifts ±25 % between sessions: a +25 % run is within
    the drift (no alarm), the within-run spread alone would have called it a regression."""
    drift = [0.8, 1.25, 1.0, 0.9, 1.15]
    runs = [[x * d for x in lognormal(300, 1e-3, 0.2, i)] for i, d in enumerate(drift)]
    current = [x * 1.25 for x in lognormal(300, 1e-3, 0.2, 99)]
    with_drift = compare_samples(runs, current)
    one_run = compare_samples(runs[2:3], current)
    assert with_drift["drift_measured"] and with_drift["runs"] == 5
    assert judge("x", with_drift, 0.1, None).verdict == "pass"
    assert judge("x", one_run, 0.1, None).verdict == "fail"
    assert with_drift["mde"] > 3 * one_run["mde"]


def test_sensitivity_shrinks_with_samples_and_is_enforced():
    small = compare_samples([lognormal(20, 1e-3, 0.5, 1)], lognormal(20, 1e-3, 0.5, 2))
    large = compare_samples([lognormal(2000, 1e-3, 0.5, 1)], lognormal(2000, 1e-3, 0.5, 2))
    assert large["mde"] < small["mde"] / 5
    row = judge("x", small, 0.1, min_detectable=0.07)
    assert row.verdict == "fail" and "too noisy to detect 7%" in row.detail


def test_one_session_baseline_judges_times_only_within_that_session():
    """An unchanged rerun whose session runs 30 % slower than the one baseline session (drift, not
    a regression): n/a with the reason, not a failure; the same data within one session is judged."""
    from llmcomm_tests.judging.baseline import compare as compare_stored

    volume = [{"op": "all_reduce", "phase": "decode", "site": "attn", "count": 4, "bytes": 64, "wire_bytes": 64}]
    stored = {"volume": volume, "runs": [{"env": {}, "session": "s1", "times": {"tpot": lognormal(300, 1e-3, 0.1, 1)}}]}
    current = {"env": {}, "session": "s2", "volume": volume, "times": {"tpot": lognormal(300, 1.3e-3, 0.1, 2)}}
    rows = {r.name: r for r in compare_stored(stored, current, 0.1, None)}
    assert rows["tpot"].verdict == "n/a" and "drift between sessions is not measured" in rows["tpot"].detail
    assert rows["volume (all op classes)"].verdict == "pass"
    same_session = {r.name: r for r in compare_stored(stored, dict(current, session="s1"), 0.1, None)}
    assert same_session["tpot"].verdict == "fail" and same_session["tpot"].detectable is not None


def test_measured_drift_judges_times_at_the_cases_share():
    from llmcomm_tests.judging.baseline import compare as compare_stored

    volume = [{"op": "all_reduce", "phase": "decode", "site": "attn", "count": 4, "bytes": 64, "wire_bytes": 64}]
    runs = [{"env": {}, "session": f"s{i}", "times": {"tpot": lognormal(300, 1e-3 * d, 0.1, i), "ttft": lognormal(300, 1e-3, 0.1, i)}}
            for i, d in enumerate([0.95, 1.05, 1.0, 0.9, 1.1])]
    current = {"env": {}, "session": "now", "volume": volume, "times": {"tpot": [x * 2 for x in lognormal(300, 1e-3, 0.1, 9)],
                                                                         "ttft": lognormal(300, 1e-3, 0.1, 9)}}
    rows = {r.name: r for r in compare_stored({"volume": volume, "runs": runs}, current, 0.1, None, level=0.01)}
    assert rows["tpot"].verdict == "fail" and rows["ttft"].verdict == "pass"
    assert rows["tpot"].level == pytest.approx(0.01 / 2) and "5 baseline sessions" in rows["tpot"].detail
    assert 0 < rows["ttft"].detectable < 1 and f"detects >= {rows['ttft'].detectable:.1%}" in rows["ttft"].detail


def test_env_changes_and_hardware_key():
    old = {"torch": "2.13.0", "nccl": "2.21.5", "devices": ["NVIDIA H100 80GB HBM3"] * 8, "backend": "nccl"}
    new = dict(old, torch="2.14.1", nccl="2.23.4")
    assert env_changes(old, new) == ["torch 2.13.0 → 2.14.1", "nccl 2.21.5 → 2.23.4"]
    assert hardware_key(old) == "nccl-8xNVIDIA_H100_80GB_HBM3"


def test_t_quantiles_are_exact_at_few_runs():
    """Two baseline sessions leave one degree of freedom: the 99.9 % two-sided t quantile is 636.6,
    not the ~40 an expansion around the normal gives; the interval must be that wide."""
    from llmcomm_tests.core.stats import t_quantile

    assert t_quantile(0.975, 1) == pytest.approx(12.706, rel=1e-4)
    assert t_quantile(0.9995, 1) == pytest.approx(636.62, rel=1e-4)
    assert t_quantile(0.975, 30) == pytest.approx(2.0423, rel=1e-4)
    runs = [lognormal(100, 1e-3, 0.2, 1), [x * 1.1 for x in lognormal(100, 1e-3, 0.2, 2)]]
    result = compare_samples(runs, lognormal(100, 1e-3, 0.2, 3), rows_in_family=10)
    spread = math.log(1 + result["ci"][1]) - math.log(1 + result["change"])
    assert spread > 100 * 0.05  # 127 × the drift between the two sessions: no false confidence


def test_runs_of_one_session_count_once():
    from llmcomm_tests.judging.baseline import sessions

    runs = [{"session": "a", "times": {"tpot": [1.0, 2.0]}}, {"session": "a", "times": {"tpot": [3.0]}},
            {"session": "b", "times": {"tpot": [4.0]}}]
    assert sessions(runs, "tpot") == [[1.0, 2.0, 3.0], [4.0]]


@pytest.mark.parametrize("name", ["../../x", "a/b", "", ".hidden", "x/../../y"])
def test_baseline_names_stay_inside_the_folder(name):
    from llmcomm_tests.judging.baseline import check_name

    with pytest.raises(ValueError, match="no paths"):
        check_name(name)


def test_baseline_files_are_written_atomically(tmp_path, monkeypatch):
    """A write that dies half-way leaves the previous baseline intact (temp file + rename)."""
    from llmcomm_tests.judging import baseline

    path = tmp_path / "b.json"
    run = {"env": {}, "session": "s", "case": {}, "volume": [], "times": {"tpot": [1.0]}}
    baseline.add_run(path, run)
    before = path.read_text()

    def full_disk(fd):  # the temporary file exists and is half written when the disk fills
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("llmcomm_tests.core.private_files.os.fsync", full_disk)
    with pytest.raises(OSError):
        baseline.add_run(path, run)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["b.json"]
