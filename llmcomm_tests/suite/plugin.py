"""pytest plugin: YAML SLO specs become tests.  Hooks only; the work lives in the other modules.

Loaded through the ``pytest11`` entry point (or ``pytest_plugins`` in a conftest).  Importing it
must not import torch: torch is imported when a case runs.
"""

from __future__ import annotations

import os
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
        state.resources.handle_sigterm()  # pytest's controller only, not an xdist worker
        if not config.option.xmlpath and _runs_specs(config):
            config.option.xmlpath = os.path.join(resolved.report_dir, "junit.xml")
        config.pluginmanager.register(ReportWriter(config), "llmcomm-report-writer")


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
    cases whose timing is judged: their latency tests share the session's significance."""
    state = config.stash[SESSION_KEY]
    if items:
        from llmcomm_tests.suite.items import judges_timing

        state.timed_cases = max(1, sum(judges_timing(item, state) for item in items))
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
    — registered in pytest_configure so each hook has the state without module globals."""

    def __init__(self, config):
        self.config = config
        self.state = config.stash[SESSION_KEY]

    def pytest_runtest_logreport(self, report):
        data = getattr(report, "llmcomm", None)
        if data is not None:
            from llmcomm_tests.core.documents import CaseResult, from_json
            from llmcomm_tests.report import json_report

            result = from_json(CaseResult, data)
            report_dir = self.state.options.report_dir
            if not self.state.results:
                json_report.start(report_dir)
            self.state.results.append(result)
            json_report.append_item(report_dir, result)  # survives even a hard kill of pytest

    def pytest_sessionfinish(self, session, exitstatus):
        if self.state.results:
            from llmcomm_tests.report import html, json_report

            interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
            report = self.state.session_report(complete=not interrupted, exitstatus=exitstatus)
            json_report.write(self.state.options.report_dir, report)
            html.write_for_session(report, self.state.options.report_dir)  # never raises (warns)

    def pytest_terminal_summary(self, terminalreporter):
        if self.state.results:
            out = self.state.options.report_dir
            terminalreporter.write_line(f"llmcomm reports: {out}/junit.xml, {out}/llmcomm-report.json, "
                                        f"{out}/llmcomm-report.html")

    @pytest.hookimpl(trylast=True)  # pytest's junitxml has written the file by then
    def pytest_unconfigure(self, config):
        if self.state.results and config.option.xmlpath:
            from llmcomm_tests.report import junit

            junit.enrich(config.option.xmlpath, self.state.session_report())
