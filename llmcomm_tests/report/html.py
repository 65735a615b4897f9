"""The session's HTML report: one self-contained file (inline CSS, figures as base64 PNG, no scripts,
no external references) built from the session's typed report (``documents.SessionReport``).

Sections: environment fingerprint, one summary row per case, baseline comparison (when verdict rows
with check "baseline" exist), figures (``plots``), and each case's verdict table in a <details>.
Every piece of text from the document goes through ``html.escape``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import warnings
from pathlib import Path

from llmcomm_tests.core.documents import CaseResult, SessionReport
from llmcomm_tests.core.text import fmt, nbytes, seconds
from llmcomm_tests.report import json_report
from llmcomm_tests.report.json_report import replace_file
from llmcomm_tests.report.plots import all_plots
from llmcomm_tests.report.table import HEADER, cells

FILENAME = "llmcomm-report.html"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:24px;color:#1b1b1b;
background:#fff;font-size:14px;line-height:1.4}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:6px 0 12px}th,td{border:1px solid #d0d0d0;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f2f4f7}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.fail td{background:#fff1f0}tr.error td{background:#fff7e6}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-weight:600;font-size:12px;color:#fff}
.pass{background:#2e7d32}.fail{background:#c62828}.error{background:#ef6c00}.na{background:#757575}
.status{font-size:15px;margin:6px 0 14px}.muted{color:#666}
figure{margin:12px 0 22px}figure img{max-width:100%;border:1px solid #e3e3e3}figcaption{color:#555;font-size:12px;
max-width:1000px}details{margin:6px 0;border:1px solid #e3e3e3;border-radius:4px;padding:4px 10px}
summary{cursor:pointer;font-weight:600}pre{background:#f7f7f7;padding:8px;overflow-x:auto;white-space:pre-wrap}
code{font-size:12px}
"""


def esc(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# -- formatting ----------------------------------------------------------------------------------


def status_of(item: CaseResult) -> str:
    """pass | fail | error (the case could not run)."""
    if item.error or (item.run is None and item.ab is None):
        return "error"
    return "pass" if item.verdict.passed else "fail"


def badge(status: str) -> str:
    css = {"pass": "pass", "fail": "fail", "error": "error"}.get(status, "na")
    return f'<span class="badge {css}">{esc(status.upper())}</span>'


def layout_text(item: CaseResult) -> str:
    if item.run is not None:
        return f"TP {item.run.case.tp} × PP {item.run.case.pp}"
    return item.case_id.split("-b")[0]


def anchor(index: int) -> str:
    return f"case-{index}"


def _table(header, rows, row_classes=None, numeric=()) -> str:
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for i, r in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        tds = "".join(f'<td class="num">{c}</td>' if j in numeric else f"<td>{c}</td>" for j, c in enumerate(r))
        out.append(f"<tr{cls}>{tds}</tr>")
    out.append("</table>")
    return "\n".join(out)


# -- sections --------------------------------------------------------------------------------------


def environment(doc: SessionReport) -> dict:
    """Session fingerprint, completed with what the ranks reported (devices, CUDA, world size)."""
    env = dict(doc.env or {})
    run_envs = [it.run.env for it in doc.items if it.run is not None]
    run_env = next((e for e in run_envs if e), None) or {}
    for key in ("devices", "cuda", "nccl", "torch", "host", "driver"):
        if not env.get(key) and run_env.get(key):
            env[key] = run_env[key]
    return env


def header_section(doc: SessionReport) -> str:
    env = environment(doc)
    items = doc.items
    statuses = [status_of(it) for it in items]
    counts = {s: statuses.count(s) for s in ("pass", "fail", "error")}
    complete = "complete" if doc.complete else "INCOMPLETE (the session did not finish)"
    status = (f'<p class="status">{len(items)} cases: {badge("pass")} {counts["pass"]} '
              f'{badge("fail")} {counts["fail"]} {badge("error")} {counts["error"]} '
              f'<span class="muted">— session {esc(complete)}, exit status {esc(doc.exitstatus)}</span></p>')
    devices = env.get("devices")
    if isinstance(devices, list):  # ["NVIDIA H100", "NVIDIA H100", ...] -> "2 × NVIDIA H100"
        devices = [d if devices.count(d) == 1 else f"{devices.count(d)} × {d}" for d in dict.fromkeys(devices)]
    fields = [
        ("torch", env.get("torch")), ("backend", doc.backend), ("hardware profile", doc.hardware),
        ("host", env.get("host")), ("devices", ", ".join(devices) if isinstance(devices, list) else devices),
        ("ranks available", doc.ranks), ("CUDA", env.get("cuda")), ("NCCL", env.get("nccl")),
        ("driver", env.get("driver")), ("python", env.get("python")), ("platform", env.get("platform")),
        ("llmcomm-tests", env.get("llmcomm_tests")),
        ("communication variables (NCCL_, GLOO_, CUDA_, UCX_, FI_)",
         " ".join(f"{k}={v}" for k, v in (env.get("variables") or {}).items()) or None),
        ("NCCL config files", " ".join(f"{k}: {v}" for k, v in (env.get("nccl_config") or {}).items()) or None),
    ]
    options = doc.options or {}
    chosen = {k: v for k, v in options.items() if v not in (None, "", [], ())}
    if chosen:
        fields.append(("options", ", ".join(f"{k}={v}" for k, v in sorted(chosen.items()))))
    rows = [(f"<b>{esc(k)}</b>", esc(v)) for k, v in fields if v not in (None, "", [])]
    return status + "<h2>Environment</h2>\n" + _table(None, rows)


def failing_checks(item: CaseResult) -> list[str]:
    return [f"{r.check}: {r.name}" for r in item.verdict.failed]


def summary_section(items: list[CaseResult]) -> str:
    header = ("spec", "case", "layout", "result", "TTFT p50", "TPOT p50", "bytes / token", "failing checks")
    rows, classes = [], []
    for i, it in enumerate(items):
        status = status_of(it)
        if status == "error":
            failing_html = esc(str(it.error or "did not run").splitlines()[0])
        else:
            failing_html = "<br>".join(esc(f) for f in failing_checks(it)) or '<span class="muted">none</span>'
        run = it.run
        rows.append((esc(it.spec), f'<a href="#{anchor(i)}">{esc(it.case_id)}</a>', esc(layout_text(it)),
                     badge(status), esc(seconds(run.metrics.ttft.p50 if run else None)),
                     esc(seconds(run.metrics.tpot.p50 if run else None)),
                     esc(nbytes(run.comm.bytes_per_token if run else None)), failing_html))
        classes.append(status if status != "pass" else "")
    return "<h2>Summary</h2>\n" + _table(header, rows, classes, numeric=(4, 5, 6))


def baseline_rows(item: CaseResult):
    return [r for r in item.verdict.rows if r.check == "baseline"]


def baseline_section(items: list[CaseResult]) -> str:
    rows, classes = [], []
    for it in items:
        for r in baseline_rows(it):
            rows.append((esc(it.case_id), esc(r.name), esc(fmt(r.measured, "change") if r.unit == "change" else "-"),
                         esc(f"[{r.low:+.1%}, {r.high:+.1%}]" if r.low is not None and r.unit == "change" else "-"),
                         esc(f"change <= {r.budget:.0%}" if r.budget is not None else "-"),
                         badge(r.verdict), esc(r.detail)))
            classes.append("fail" if r.verdict == "fail" else "")
    if not rows:
        return ""
    header = ("case", "compared", "change", "interval", "threshold", "verdict", "detail")
    failed = [r for r, c in zip(rows, classes) if c == "fail"]
    out = ["<h2>Baseline comparison</h2>"]
    if failed:
        out.append(f"<p>{len(failed)} of {len(rows)} compared rows failed:</p>")
        out.append(_table(header, failed, ["fail"] * len(failed), numeric=(2, 3)))
    else:
        out.append(f"<p>All {len(rows)} compared rows pass.</p>")
    out.append(f"<details><summary>every compared row ({len(rows)})</summary>\n"
               f"{_table(header, rows, classes, numeric=(2, 3))}</details>")
    return "\n".join(out)


def plots_section(items: list[CaseResult]) -> str:
    out = ["<h2>Figures</h2>"]
    plots = all_plots(items)
    if not plots:
        out.append('<p class="muted">No case produced a run to draw.</p>')
    for p in plots:
        img = (f'<img alt="{esc(p.title)}" src="data:image/png;base64,{base64.b64encode(p.png).decode("ascii")}">'
               if p.png else "")
        out.append(f'<figure id="fig-{esc(p.key)}"><h3>{esc(p.title)}</h3>{img}'
                   f"<figcaption>{esc(p.caption)}</figcaption></figure>")
    return "\n".join(out)


def details_section(items: list[CaseResult]) -> str:
    out = ["<h2>Cases</h2>"]
    for i, it in enumerate(items):
        status = status_of(it)
        rows = it.verdict.rows
        opened = " open" if status != "pass" else ""
        out.append(f'<details id="{anchor(i)}"{opened}><summary>{badge(status)} {esc(it.spec)} '
                   f'[{esc(it.case_id)}] <span class="muted">{len(rows)} checks, {len(it.verdict.failed)} failed'
                   f'{" — " + esc(it.nodeid) if it.nodeid else ""}</span></summary>')
        if it.hardware_how:
            out.append(f'<p class="muted">hardware profile {esc(it.hardware)}: {esc(it.hardware_how)}</p>')
        out += [f'<p class="muted">{esc(a.describe())}</p>' for a in (it.anchor, it.reprobe) if a is not None]
        if it.error:
            out.append(f"<pre>{esc(it.error)}</pre>")
        if rows:
            body = [tuple(esc(c) for c in cells(r)) for r in rows]
            out.append(_table(HEADER, body, ["fail" if r.verdict == "fail" else "" for r in rows]))
        out.append("</details>")
    return "\n".join(out)


# -- the page --------------------------------------------------------------------------------------


def render(session_doc: SessionReport) -> str:
    items = session_doc.items
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = "llmcomm-tests report"
    specs = sorted({it.spec for it in items})
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        (f'<p class="muted">specs: {esc(", ".join(specs) or "-")} · generated {esc(now)} · '
         f'schema {esc(session_doc.schema)}</p>'),
        header_section(session_doc),
        summary_section(items),
        baseline_section(items),
        plots_section(items),
        details_section(items),
        "</body></html>",
    ]
    return "\n".join(p for p in parts if p)


def write_for_session(report: SessionReport, report_dir: "str | Path") -> Path | None:
    """The plugin's session-end hook: ``report`` → ``<report_dir>/llmcomm-report.html``.

    Never raises: a report that cannot be drawn is a warning, not a failed session."""
    try:
        return write_html(report, Path(report_dir) / FILENAME)
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"llmcomm: HTML report not written: {type(exc).__name__}: {exc}", stacklevel=2)
        return None


def write_html(session_doc: SessionReport, path) -> Path:
    """Render ``session_doc`` to ``path`` (atomically: a reader never sees half a file; a failed
    write keeps the old file and raises ``json_report.ReportFileError``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return replace_file(path, render(session_doc))


def write_in_progress(session_id: str, report_dir: "str | Path") -> Path:
    """The page a session puts in place of the previous session's report when it starts: a reader
    never takes an old verdict for this session's."""
    text = (f"<!doctype html><meta charset=utf-8><title>llmcomm report: in progress</title>"
            f"<p>llmcomm session {esc(session_id)} is in progress, or stopped before it could write its report: "
            f"see {esc(json_report.FILENAME)}, or rebuild with <code>llmcomm report DIR</code>.</p>\n")
    return replace_file(Path(report_dir) / FILENAME, text)
