"""Nothing lost when a run is cut short: reports after SIGTERM and SIGKILL, ``complete`` only when
complete, one session per report folder, storage errors as one line that keeps good files,
damaged baselines and reports."""

import contextlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmcomm_tests.commands import main as llmcomm
from llmcomm_tests.core.documents import SessionReport
from llmcomm_tests.report import json_report, junit
from llmcomm_tests.report.folder import FolderBusy, ReportFolder
from llmcomm_tests.report.json_report import ReportFileError
from test_baseline import gate  # noqa: F401  (fixture)
from test_plugin import QUIET, specs, wide_profile  # noqa: F401  (fixtures)


def _pytest(specs, *args, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pytest", *QUIET, "-q", *args], cwd=specs.path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)


def _wait_for_items(reports: Path, n: int = 1, timeout: float = 180) -> None:
    items = reports / json_report.ITEMS_FILENAME
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if len(items.read_text().splitlines()) >= n:
                return
        time.sleep(0.1)
    raise AssertionError("no case finished")


def test_sigterm_writes_junit_json_and_html_saying_incomplete(specs):
    reports = specs.path / "reports"
    proc = _pytest(specs, "-k", "b1")
    _wait_for_items(reports)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGTERM, out.decode()[-2000:]
    report = json.loads((reports / "llmcomm-report.json").read_text())
    assert report["complete"] is False and report["exitstatus"] == 2 and report["selected"] == 4
    assert 1 <= len(report["items"]) < 4
    from junitparser import JUnitXml

    JUnitXml.fromfile(str(reports / "junit.xml"))
    assert "INCOMPLETE" in (reports / "llmcomm-report.html").read_text()
    assert not [p for p in reports.iterdir() if p.name.startswith(".llmcomm-")]


def test_a_killed_session_leaves_no_old_verdict_and_its_report_can_be_rebuilt(specs, capsys):
    reports = specs.path / "reports"
    specs.runpytest_subprocess(*QUIET, "-k", "tp1-pp1").assert_outcomes(passed=2)  # a finished session first
    (reports / json_report.ITEMS_FILENAME).unlink()  # so that the wait below sees the new session's items
    proc = _pytest(specs, "-k", "b1")
    _wait_for_items(reports)
    proc.kill()
    proc.wait()
    report = json.loads((reports / "llmcomm-report.json").read_text())
    assert report["complete"] is False and report["exitstatus"] is None and report["items"] == []
    assert "in progress" in (reports / "llmcomm-report.html").read_text()
    logged = [json.loads(line) for line in (reports / json_report.ITEMS_FILENAME).read_text().splitlines()]
    assert logged and {line["session"] for line in logged} == {report["session_id"]}
    assert llmcomm(["report", str(reports)]) == 0
    rebuilt = json.loads((reports / "llmcomm-report.json").read_text())
    assert rebuilt["complete"] is False and len(rebuilt["items"]) == len(logged)
    assert "rebuilt from" in capsys.readouterr().out


def test_complete_only_when_every_selected_case_has_a_result():
    from llmcomm_tests.suite.session_reports import SessionReports

    class State:
        options = type("O", (), {"report_dir": "unused"})

    reports = SessionReports(State(), None)
    reports.select(["a", "b", "c"])
    reports.done("a")
    reports.done("b")
    assert not reports.complete(interrupted=False)  # a session stopped twice in a row still says so
    reports.done("c")
    assert reports.complete(interrupted=False) and not reports.complete(interrupted=True)


def test_a_second_session_on_one_report_folder_is_refused_in_one_line(specs, tmp_path):
    held = ReportFolder.claim(specs.path / "reports")
    try:
        with pytest.raises(FolderBusy, match="in use by another session"):
            ReportFolder.claim(specs.path / "reports")
        result = specs.runpytest_subprocess(*QUIET, "-k", "tp1-pp1-b1")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines(["ERROR: llmcomm: the report folder * is in use by another session (pid *)*"])
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()
    finally:
        held.release()


@contextlib.contextmanager
def _tmpfs(path: Path, size: str = "64k", read_only: bool = False):
    path.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        (path / "reports").mkdir()
        if read_only:
            subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)
        yield path / "reports"
    finally:
        subprocess.run(["umount", "-l", str(path)])


def test_a_read_only_report_folder_is_one_line_before_the_first_case(specs):
    with _tmpfs(specs.path / "ro", read_only=True) as reports:
        result = specs.runpytest_subprocess(*QUIET, "-k", "tp1-pp1-b1", f"--llmcomm-report-dir={reports}")
        assert result.ret == pytest.ExitCode.USAGE_ERROR
        result.stderr.fnmatch_lines([f"ERROR: llmcomm: the report folder {reports} is not writable: Read-only file system"])
        assert "INTERNALERROR" not in result.stdout.str() + result.stderr.str()


def _report(items: int) -> SessionReport:
    big = {"padding": "x" * 20000}
    return SessionReport(big, "gloo", "cpu-loopback", 2, {}, [], complete=True, exitstatus=0,
                         session_id=f"s{items}")


def test_a_full_disk_keeps_every_good_file_and_leaves_no_temporary_file(tmp_path):
    with _tmpfs(tmp_path / "full") as reports:
        json_report.write(reports, _report(1))
        good = (reports / json_report.FILENAME).read_bytes()
        (reports / "junit.xml").write_text('<?xml version="1.0"?><testsuites><testsuite name="s"/></testsuites>')
        junit_before = (reports / "junit.xml").read_bytes()
        (reports / json_report.ITEMS_FILENAME).write_text('{"session": "s"}\n')
        filler = reports / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as f:
            while True:
                f.write(b"x" * 1024)
                f.flush()
        bigger = SessionReport({"padding": "y" * 60000}, "gloo", "x", 2, {}, [], session_id="s2")
        with pytest.raises(ReportFileError, match=f"cannot write {reports}/llmcomm-report.json: No space left"):
            json_report.write(reports, bigger)
        assert (reports / json_report.FILENAME).read_bytes() == good
        from llmcomm_tests.core.documents import CaseResult, Prediction, Verdict

        item = CaseResult("s", "p", "c" * 30000, "h", "gloo", {}, Prediction([]), Verdict("c", []))
        with pytest.raises(ReportFileError, match="cannot append to"):
            json_report.append_item(reports, item, "s")
        assert (reports / json_report.ITEMS_FILENAME).read_text() == '{"session": "s"}\n'  # no torn line
        with pytest.raises(ReportFileError, match="junit.xml: No space left"):
            junit.write_atomically(reports / "junit.xml", lambda tmp: Path(tmp).write_text("<x>" * 30000))
        assert (reports / "junit.xml").read_bytes() == junit_before
        assert not [p.name for p in reports.iterdir() if p.name.startswith(".llmcomm-")]


def test_a_truncated_baseline_makes_its_rows_n_a_and_the_case_keeps_its_results(gate):  # noqa: F811
    stored = sorted((gate.path / ".llmcomm").rglob("*.json"))[0]
    stored.write_text(stored.read_text()[:100])
    result = gate.runpytest_subprocess(*QUIET, "-k", "b1", "--llmcomm-baseline-compare", "before", "-rA",
                                       "--llmcomm-report-dir", "reports")
    result.assert_outcomes(passed=2)
    text = result.stdout.str()
    assert "Traceback (most recent call last)" not in text
    result.stdout.fnmatch_lines([f"baseline*baseline before*N/A (cannot read baseline *{stored.parent.name}/{stored.name}: JSONDecodeError*"])
    report = json.loads((gate.path / "reports" / "llmcomm-report.json").read_text())
    assert len(report["items"]) == 2 and report["complete"] is True


def test_llmcomm_report_on_a_damaged_item_is_one_line(tmp_path, capsys):
    report = to_report_with_items(2)
    report["items"][1]["verdict"] = "garbage"
    (tmp_path / json_report.FILENAME).write_text(json.dumps(report))
    assert llmcomm(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "item 1 is damaged" in err and str(tmp_path) in err


def test_llmcomm_budgets_on_a_wrong_schema_file_names_the_file(tmp_path, capsys):
    (tmp_path / json_report.FILENAME).write_text(json.dumps({"schema": "something/9", "items": []}))
    assert llmcomm(["budgets", "suggest", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / json_report.FILENAME) in err


def to_report_with_items(n: int) -> dict:
    from llmcomm_tests.core.documents import CaseResult, Prediction, Verdict, to_json

    items = [CaseResult("s", "p.yaml", f"c{i}", "h", "gloo", {}, Prediction([]), Verdict(f"c{i}", []))
             for i in range(n)]
    return to_json(SessionReport({}, "gloo", "h", 2, {}, items))

