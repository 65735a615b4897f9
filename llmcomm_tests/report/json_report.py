"""The session's JSON report: every item's run and prediction documents.

``llmcomm-report.json`` is written when a session starts (``complete: false``, ``exitstatus:
null``: in progress, or killed before it could say more) and again when it ends, however it ends
(pytest ends a session on failures, Ctrl-C and, through the plugin, SIGTERM).  ``complete`` is true
only when every selected case has a result.  Meanwhile each finished case is appended to
``llmcomm-items.jsonl`` — one line each, tagged with the session's id, cheap, and still readable if
the process dies hard; ``rebuild`` makes the report from it (``llmcomm report``).

Every write goes to a temporary file in the folder and is renamed over the old file, or (the item
log) is undone on failure: a full disk or a read-only folder costs the new content, never an old
good file, and leaves no temporary file.  Failures raise ``ReportFileError``: one line naming the
file and the cause.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

from llmcomm_tests.core.documents import CaseResult, SessionReport, from_json, to_json
from llmcomm_tests.core.private_files import write_text_atomically

FILENAME = "llmcomm-report.json"
ITEMS_FILENAME = "llmcomm-items.jsonl"


class ReportFileError(OSError):
    """A report file that could not be read or written: ``str`` is one line (file and cause)."""


def cause(exc: BaseException) -> str:
    """The cause of an I/O error without its file name (the message names the file itself)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"


def load_session_report(path: "str | Path") -> SessionReport:
    """A session's JSON report, read back (for the HTML report, budgets and benchmarks).  Raises
    ReportFileError (unreadable, not JSON) or ValueError (another schema, a damaged item), each
    naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ReportFileError(f"cannot read {path}: {cause(exc)}") from None
    return session_report_of(data, path)


def session_report_of(data, path: "str | Path") -> SessionReport:
    schema = SessionReport.schema
    if not isinstance(data, dict) or data.get("schema") != schema:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{path} has schema {found!r}, expected {schema!r}")
    items = data.get("items")
    if not isinstance(items, list):
        raise ValueError(f"{path}: 'items' is not a list")
    head = {k: v for k, v in data.items() if k != "items"}
    try:
        report = from_json(SessionReport, {**head, "items": []})
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"{path}: damaged session fields: {type(exc).__name__}: {exc}") from None
    report.items = [case_result_of(item, f"{path}: item {i}") for i, item in enumerate(items)]
    return report


def case_result_of(data, where: str) -> CaseResult:
    """One case result, checked enough that reports can be drawn from it."""
    try:
        result = from_json(CaseResult, data)
        result.verdict.rows = list(result.verdict.rows)
        for row in result.verdict.rows:
            str(row.check), str(row.name), str(row.verdict)
        return result
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ValueError(f"{where} is damaged: {type(exc).__name__}: {exc}") from None


def _out_dir(report_dir: "str | Path") -> Path:
    out = Path(report_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportFileError(f"cannot create the report folder {out}: {cause(exc)}") from None
    return out


def replace_file(path: Path, text: str) -> Path:
    """``text`` as ``path``'s new content, atomically: a temporary file in the same folder renamed
    over it.  On failure the old file stays, the temporary file goes, and ReportFileError says why."""
    try:
        return write_text_atomically(path, text)
    except OSError as exc:
        raise ReportFileError(f"cannot write {path}: {cause(exc)}; the previous file is kept") from None


def start(report_dir: "str | Path", head: SessionReport | None = None) -> None:
    """A new session: the item log starts empty and, given the session's ``head`` (no items), the
    report says the session is in progress — never the previous session's verdict."""
    out = _out_dir(report_dir)
    replace_file(out / ITEMS_FILENAME, "")
    if head is not None:
        write(out, replace(head, items=[], complete=False, exitstatus=None))


def append_item(report_dir: "str | Path", result: CaseResult, session_id: str = "") -> None:
    """One line for ``result``, written whole or not at all (a failed write is cut off again)."""
    path = _out_dir(report_dir) / ITEMS_FILENAME
    line = (json.dumps({"session": session_id, **to_json(result)}) + "\n").encode()
    try:
        # O_NOFOLLOW: a symlink planted as the item log is refused, never appended through
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise ReportFileError(f"cannot append to {path}: {cause(exc)}") from None
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(28, "No space left on device (short write)")
        except OSError as exc:
            os.ftruncate(fd, size)  # no torn line: readers see whole items only
            raise ReportFileError(f"cannot append to {path}: {cause(exc)}") from None
    finally:
        os.close(fd)


def read_items(report_dir: "str | Path", session_id: str | None = None) -> tuple[list[CaseResult], list[str]]:
    """The item log's results (of ``session_id`` when given) and one line per line that could not
    be read (a torn or damaged line is named, never silently dropped)."""
    path = Path(report_dir) / ITEMS_FILENAME
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise ReportFileError(f"cannot read {path}: {cause(exc)}") from None
    results, problems = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if session_id is not None and data.get("session") != session_id:
                continue
            results.append(case_result_of(data, f"{path}:{number}"))
        except (ValueError, AttributeError) as exc:
            problems.append(str(exc) if isinstance(exc, ValueError) and str(exc).startswith(str(path))
                            else f"{path}:{number}: not a JSON item: {exc}")
    return results, problems


def rebuild(report_dir: "str | Path") -> tuple[SessionReport, list[str]]:
    """The session report made again from the item log: the head (environment, options) from the
    report the session started, the items of that session from the log.  ``complete`` stays what
    the report says when it was finished with every item, else false."""
    out = Path(report_dir)
    head = None
    try:
        head = load_session_report(out / FILENAME)
    except FileNotFoundError:
        pass
    session_id = head.session_id if head is not None and head.session_id else None
    items, problems = read_items(out, session_id)
    if head is None:
        head = SessionReport({}, items[0].backend if items else "", items[0].hardware if items else "", 0, {}, [],
                             complete=False, session_id=session_id or "")
    finished = head.exitstatus is not None and head.complete and len(head.items) == len(items)
    return replace(head, items=items, complete=finished and not problems), problems


def write(report_dir: "str | Path", report: SessionReport) -> Path:
    """The whole session document, replaced atomically (never half-written)."""
    out = _out_dir(report_dir)
    return replace_file(out / FILENAME, json.dumps(to_json(report), indent=1))
