"""The session's JSON report: every item's run and prediction documents.

``llmcomm-report.json`` is written once, when the session ends (pytest ends a session on failures
and on Ctrl-C too).  Meanwhile each finished case is appended to ``llmcomm-items.jsonl`` — one
line each, cheap, and still readable if the process dies hard — instead of rewriting a growing
document after every case.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from llmcomm_tests.core.documents import CaseResult, SessionReport, from_json, to_json

FILENAME = "llmcomm-report.json"
ITEMS_FILENAME = "llmcomm-items.jsonl"


def load_session_report(path: "str | Path") -> SessionReport:
    """A session's JSON report, read back (for the HTML report, budgets and benchmarks)."""
    return from_json(SessionReport, json.loads(Path(path).read_text()))


def _out_dir(report_dir: "str | Path") -> Path:
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def start(report_dir: "str | Path") -> None:
    """A new session: the item log starts empty."""
    (_out_dir(report_dir) / ITEMS_FILENAME).write_text("")


def append_item(report_dir: "str | Path", result: CaseResult) -> None:
    with open(_out_dir(report_dir) / ITEMS_FILENAME, "a") as f:
        f.write(json.dumps(to_json(result)) + "\n")


def write(report_dir: "str | Path", report: SessionReport) -> Path:
    """The whole session document, replaced atomically (never half-written)."""
    out = _out_dir(report_dir)
    path = out / FILENAME
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".llmcomm-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(to_json(report), f, indent=1)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide the report from CI artifact uploaders
    os.replace(tmp, path)
    return path
