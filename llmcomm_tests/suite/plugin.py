"""pytest plugin: YAML SLO specs become tests.  Hooks only; the work lives in the other modules.

Loaded through the ``pytest11`` entry point (or ``pytest_plugins`` in a conftest).  Importing it
must not import torch: torch is imported when a case runs.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

import pytest

from llmcomm_tests.suite import options as llmcomm_options
from llmcomm_tests.suite import worker_gpus
from llmcomm_tests.suite.session import SESSION_KEY, LLMCommSession

SPEC_DIRS_INI = "llmcomm_spec_dirs"
MARKERS = (
    "llmcomm: an llmcomm-tests SLO case (one layout x workload of a spec)",
    "tp: tensor-parallel only layout",
    "pp: pipeline-parallel only layout",
    "hybrid: TP x PP layout",
    "gpus(n): the case needs n ranks",
)


def pytest_addoption(parser):
    llmcomm_options.add_options(parser)
    parser.addini(SPEC_DIRS_INI, "folders whose *.yaml files are SLO specs", type="args", default=["slo_specs"])


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


@pytest.hookimpl(tryfirst=True)  # before junitxml reads --junitxml
def pytest_configure(config):
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    try:
        resolved = llmcomm_options.resolve(config)
        worker_gpus.assign(config, resolved.gpus)  # before the session counts devices
    except ValueError as exc:
        raise pytest.UsageError(f"llmcomm: {exc}") from None
    state = LLMCommSession(resolved)
    if resolved.hardware:
        try:
            state.machine_profile()
        except ValueError as exc:
            raise pytest.UsageError(f"llmcomm: --llmcomm-hardware: {exc}") from None
    config.stash[SESSION_KEY] = state
    if not _is_worker(config):
        # pytest's controller only, not an xdist worker: SIGTERM ends the session as Ctrl-C does
        # (reports written, complete: false), then the process by the signal
        state.resources.handle_sigterm(interrupt=True)
        atexit.register(state.resources.end_if_terminated)
        runs_specs = _runs_specs(config)
        if not config.option.xmlpath and runs_specs:
            config.option.xmlpath = os.path.join(resolved.report_dir, "junit.xml")
        writer = ReportWriter(config)
        if runs_specs:  # before the first case: a busy, read-only or full folder is one line now
            try:
                writer.reports.claim()
            except OSError as exc:
                raise pytest.UsageError(f"llmcomm: {exc}") from None
        config.pluginmanager.register(writer, "llmcomm-report-writer")


def _runs_specs(config) -> bool:
    """Default JUnit output only when specs can be collected (our own unit tests stay quiet)."""
    dirs = config.getini(SPEC_DIRS_INI)
    args = config.args or [str(config.rootpath)]
    return any(d in Path(a).parts or (Path(a) / d).is_dir() or Path(a).suffix in (".yaml", ".yml")
               for a in args for d in dirs)


def pytest_collect_file(file_path: Path, parent):
    """A YAML file under a spec folder, or one named on the command line wherever it lives."""
    if file_path.suffix in (".yaml", ".yml") and (
            any(d in file_path.parent.parts for d in parent.config.getini(SPEC_DIRS_INI))
            or parent.session.isinitpath(file_path)):
        from llmcomm_tests.suite.items import SpecFile

        return SpecFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(trylast=True)  # after -k / -m deselection
def pytest_collection_modifyitems(config, items):
    """Fail the session, before any case runs, when a case would need this machine's own profile
    and none describes it (a CUDA node no preset names): never judge against a guess.  Count the
    cases whose timing is judged and those that run: their tests share the session's significance."""
    state = config.stash[SESSION_KEY]
    if items:
        from llmcomm_tests.suite.items import judges_timing, runs_here

        state.timed_cases = max(1, sum(judges_timing(item, state) for item in items))
        state.judged_cases = max(1, sum(runs_here(item, state) for item in items))
    if any(not getattr(getattr(item, "case", None), "hardware_given", True) for item in items):
        try:
            state.machine_profile()
        except ValueError as exc:
            raise pytest.UsageError(f"llmcomm: {exc}") from None


def pytest_unconfigure(config):
    state = config.stash.get(SESSION_KEY, None)
    if state is not None:
        state.close()  # whatever this process started: passed, failed or interrupted


def pytest_report_header(config):
    return config.stash[SESSION_KEY].header()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    result = getattr(item, "llmcomm_result", None)
    if call.when == "call" and result is not None:
        from llmcomm_tests.core.documents import to_json

        result.nodeid = item.nodeid
        # Plain JSON types only: the report travels to the xdist controller through execnet.
        outcome.get_result().llmcomm = to_json(result)


class ReportWriter:
    """Hooks of the process that writes reports (not an xdist worker), bound to its session state
    — registered in pytest_configure so each hook has the state without module globals.  The work
    is ``SessionReports``'."""

    def __init__(self, config):
        from llmcomm_tests.suite.session_reports import SessionReports

        self.config = config
        self.state = config.stash[SESSION_KEY]
        self.reports = SessionReports(self.state, config.option.xmlpath)
        self._said = 0  # problems already in the terminal summary

    @pytest.hookimpl(trylast=True)  # after -k / -m deselection
    def pytest_collection_modifyitems(self, items):
        self.reports.select(item.nodeid for item in items if hasattr(item, "case"))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids):
        """Under xdist the controller collects nothing itself: a worker's ids are the selection."""
        self.reports.select(i for i in ids if ".yaml::" in i or ".yml::" in i)

    def pytest_runtest_logreport(self, report):
        data = getattr(report, "llmcomm", None)
        if data is not None:
            from llmcomm_tests.core.documents import CaseResult, from_json

            self.reports.add(from_json(CaseResult, data))

    def pytest_runtest_logfinish(self, nodeid):
        self.reports.done(nodeid)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_sessionfinish(self, session, exitstatus):
        from _pytest.junitxml import xml_key

        from llmcomm_tests.suite.session_reports import signals_held

        xml = self.config.stash.get(xml_key, None)
        with signals_held(self._terminated):
            self.reports.junit_to_temporary(xml)
            outcome = yield
            if self.reports.junit_in_place(xml, outcome.excinfo[1] if outcome.excinfo else None):
                outcome.force_result(None)  # said in the summary in one line: no INTERNALERROR
            interrupted = exitstatus == pytest.ExitCode.INTERRUPTED or self.state.resources.terminated
            self.reports.finish(int(exitstatus), interrupted)

    def _terminated(self) -> None:
        self.state.resources.terminated = True

    def pytest_terminal_summary(self, terminalreporter):
        if self.reports.active:
            out = self.state.options.report_dir
            terminalreporter.write_line(f"llmcomm reports: {out}/junit.xml, {out}/llmcomm-report.json, "
                                        f"{out}/llmcomm-report.html")
        for line in self.reports.problems:
            terminalreporter.write_line(f"llmcomm: {line}", red=True)
        self._said = len(self.reports.problems)

    @pytest.hookimpl(trylast=True)  # pytest's junitxml has written the file by then
    def pytest_unconfigure(self, config):
        from llmcomm_tests.suite.session_reports import signals_held

        with signals_held(self._terminated):
            if config.option.xmlpath:
                self.reports.enrich_junit(config.option.xmlpath)
            self.reports.release()
        for line in self.reports.problems[self._said:]:  # after the summary: the JUnit enrichment's
            sys.stderr.write(f"llmcomm: {line}\n")
