"""Enrich pytest's JUnit XML (xunit2) with junitparser: suite properties carry the environment
fingerprint; each llmcomm testcase's system-out carries its verdict table (pytest writes captured
output only when ``junit_logging`` asks for it, and dashboards show system-out).

The file is replaced atomically (a temporary file renamed over it): a full disk or a signal while
writing keeps the previous file whole, and a failure is one ``ReportFileError`` line."""

from __future__ import annotations

from pathlib import Path

from llmcomm_tests.core.documents import SessionReport
from llmcomm_tests.core.private_files import replace_atomically
from llmcomm_tests.report.json_report import ReportFileError, cause
from llmcomm_tests.report.table import format_table


def _flatten(prefix: str, value, out: list) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}", v, out)
    elif isinstance(value, (list, tuple)):
        out.append((prefix, ", ".join(map(str, value))))
    elif value is not None:
        out.append((prefix, str(value)))


def enrich(path: "str | Path", report: SessionReport) -> None:
    """Add ``report``'s environment as suite properties and each case's verdict table to its testcase."""
    from junitparser import JUnitXml, TestSuite

    path = Path(path)
    if not path.is_file():
        return
    try:
        xml = JUnitXml.fromfile(str(path))
    except Exception as exc:  # noqa: BLE001 - lxml/ElementTree parse errors have no common base
        raise ReportFileError(f"cannot read {path}: {cause(exc)}") from None
    suites = [xml] if isinstance(xml, TestSuite) else list(xml)
    props: list = []
    _flatten("llmcomm.env", report.env, props)
    props += [("llmcomm.backend", report.backend), ("llmcomm.hardware", report.hardware),
              ("llmcomm.ranks", str(report.ranks))]
    tables = {r.nodeid.split("::")[-1]: (r.nodeid, format_table(r.verdict.rows)) for r in report.items if r.nodeid}
    for suite in suites:
        for name, value in props:
            suite.add_property(name, value)
        for case in suite:
            hit = tables.get(case.name)
            if hit and case.classname and hit[0].startswith(case.classname.replace(".", "/").rsplit("/yaml", 1)[0]):
                case.system_out = ((case.system_out or "") + "\n" + hit[1]).strip()
    write_atomically(path, lambda tmp: xml.write(tmp))


def write_atomically(path: Path, write) -> None:
    """``write(tmp)`` to a temporary file beside ``path``, then renamed over it; on failure the old
    file stays and the temporary file goes."""
    try:
        replace_atomically(path, write)
    except OSError as exc:
        raise ReportFileError(f"cannot write {path}: {cause(exc)}; the previous file is kept") from None
