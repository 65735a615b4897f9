"""The session's JSON report: every item's run and prediction documents, written after each item
(atomically) so that a crash or Ctrl-C still leaves a valid file."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

SCHEMA = "llmcomm.session/1"
FILENAME = "llmcomm-report.json"


def document(state, complete: bool, exitstatus=None) -> dict:
    verdicts = [r["verdict"] for r in state.results]
    return {
        "schema": SCHEMA,
        "complete": complete,
        "exitstatus": None if exitstatus is None else int(exitstatus),
        "env": state.env,
        "backend": state.backend,
        "hardware": state.hardware,
        "ranks": state.ranks,
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(state.options).items()},
        "summary": {"cases": len(verdicts), "passed": sum(v["passed"] for v in verdicts),
                    "failed": sum(not v["passed"] for v in verdicts)},
        "items": state.results,
    }


def write(state, complete: bool = False, exitstatus=None) -> Path:
    out_dir = Path(state.options.report_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / FILENAME
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".llmcomm-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(document(state, complete, exitstatus), f, indent=1, default=str)
    os.replace(tmp, path)
    return path
