"""The report folder of one pytest session: claimed before the first case, told about each result,
finished however the session ends.

* At the start the folder is locked (one session at a time), probed for writing, and the previous
  session's report is replaced by this one's "in progress" (``complete: false``, no exit status).
* Each result is appended to the item log with the session's id.
* At the end JSON, HTML and JUnit are written, each atomically; ``complete`` is true only when every
  selected case has a result and the session was not stopped.  Ctrl-C and SIGTERM are held off
  while they are written (a second Ctrl-C must not leave half of them old).
* A file that cannot be written or read is one line (file and cause) in the session's summary,
  never an internal error, and the previous good file stays.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import warnings
from pathlib import Path

from llmcomm_tests.core.documents import CaseResult
from llmcomm_tests.report import html, json_report, junit
from llmcomm_tests.report.folder import ReportFolder
from llmcomm_tests.report.json_report import ReportFileError


class SessionReports:
    def __init__(self, state, junit_path: str | None):
        self.state = state
        self.dir = Path(state.options.report_dir)
        self.junit_path = junit_path
        self.folder: ReportFolder | None = None
        self.problems: list[str] = []  # one line each: the file and the cause
        self.selected: set[str] | None = None  # node ids of the llmcomm cases selected to run
        self.finished: set[str] = set()
        self._junit_tmp: str | None = None

    # -- start ----------------------------------------------------------------------------------

    def claim(self) -> None:
        """Lock and probe the folder, and mark its report as this session's, in progress.  Raises
        ReportFileError (one line) when the folder is busy or cannot be written."""
        if self.folder is not None:
            return
        self.folder = ReportFolder.claim(self.dir)
        json_report.start(self.dir, self.state.session_report(complete=False))
        html.write_in_progress(self.state.session_id, self.dir)
        if self.junit_path and Path(self.junit_path).resolve().parent == self.dir.resolve():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.junit_path)  # the previous session's, which this one would seem to have written

    def _claim_late(self) -> bool:
        """Specs reached the session some way the start did not foresee: claim at the first result."""
        if self.folder is None:
            try:
                self.claim()
            except ReportFileError as exc:
                self._problem(str(exc))
                return False
        return True

    # -- during ---------------------------------------------------------------------------------

    def add(self, result: CaseResult) -> None:
        self.state.results.append(result)
        if not self._claim_late():
            return
        try:
            json_report.append_item(self.dir, result, self.state.session_id)  # survives a hard kill of pytest
        except ReportFileError as exc:
            self._problem(str(exc))

    def select(self, nodeids) -> None:
        self.selected = set(nodeids)

    def done(self, nodeid: str) -> None:
        self.finished.add(nodeid)

    # -- end ------------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.folder is not None or bool(self.state.results)

    def complete(self, interrupted: bool) -> bool:
        if interrupted:
            return False
        if self.selected is None:
            return True  # no selection known (an unforeseen collection): every result that came is here
        return self.selected <= self.finished

    def finish(self, exitstatus: int, interrupted: bool) -> None:
        """The JSON and HTML reports of the session as it ended."""
        if not self.active or not self._claim_late():
            return
        selected = None if self.selected is None else len(self.selected)
        report = self.state.session_report(complete=self.complete(interrupted), exitstatus=exitstatus,
                                           selected=selected)
        try:
            json_report.write(self.dir, report)
        except ReportFileError as exc:
            self._problem(str(exc))
        try:
            html.write_html(report, self.dir / html.FILENAME)
        except ReportFileError as exc:
            self._problem(str(exc))
        except Exception as exc:  # noqa: BLE001 - a report that cannot be drawn is a warning, not a failed session
            warnings.warn(f"llmcomm: HTML report not written: {type(exc).__name__}: {exc}", stacklevel=2)

    def junit_to_temporary(self, xml) -> None:
        """pytest's JUnit writer opens the file for writing in place: give it a temporary file beside
        it instead (``junit_in_place`` renames it over the old one once it is whole)."""
        if xml is None or self.folder is None:
            return
        final = Path(xml.logfile)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".llmcomm-junit-", suffix=".xml")
            os.close(fd)
        except OSError as exc:
            self._problem(f"cannot write {final}: {json_report.cause(exc)}")
            return
        self._junit_tmp, self._junit_final = tmp, str(final)
        xml.logfile = tmp

    def junit_in_place(self, xml, error: BaseException | None) -> bool:
        """After pytest wrote the JUnit file: rename it over the old one, or (``error``: the write
        failed) remove it and say why.  True when ``error`` was about our file (handled)."""
        tmp, self._junit_tmp = self._junit_tmp, None
        if tmp is None:
            return False
        xml.logfile = self._junit_final
        handled = isinstance(error, OSError) and error.filename in (tmp, None)
        try:
            if error is None:
                os.chmod(tmp, 0o644)
                os.replace(tmp, self._junit_final)
                return False
            if handled:
                self._problem(f"cannot write {self._junit_final}: {json_report.cause(error)}; "
                              f"the previous file is kept")
        except OSError as exc:
            self._problem(f"cannot write {self._junit_final}: {json_report.cause(exc)}; the previous file is kept")
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return handled

    def enrich_junit(self, path: str) -> None:
        if not self.state.results:
            return
        try:
            junit.enrich(path, self.state.session_report())
        except ReportFileError as exc:
            self._problem(str(exc))

    def release(self) -> None:
        if self.folder is not None:
            self.folder.release()

    def _problem(self, line: str) -> None:
        if line not in self.problems:
            self.problems.append(line)


@contextlib.contextmanager
def signals_held(on_sigterm):
    """Ctrl-C and SIGTERM wait while reports are written: neither is raised mid-file.  A Ctrl-C
    then is dropped (the session is ending already); a SIGTERM calls ``on_sigterm`` (which marks
    the process to end by the signal once pytest is done)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def held(signum, frame):
        if signum == signal.SIGTERM:
            on_sigterm()

    previous = {sig: signal.signal(sig, held) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
