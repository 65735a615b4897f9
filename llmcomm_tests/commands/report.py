"""``llmcomm report DIR [--out FILE]``: the HTML report from a report directory's session JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llmcomm_tests.core.arguments import output_file
from llmcomm_tests.core.documents import SessionReport
from llmcomm_tests.report import json_report
from llmcomm_tests.report.html import FILENAME, write_html


def add_arguments(parser) -> None:
    parser.add_argument("dir", metavar="DIR", type=Path,
                        help="report directory holding llmcomm-report.json (the plugin's --llmcomm-report-dir)")
    parser.add_argument("--out", metavar="FILE", type=lambda text: Path(output_file(text)), default=None,
                        help="where to write the HTML (default: DIR/llmcomm-report.html)")


def main(args) -> int:
    source = args.dir / json_report.FILENAME
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"llmcomm report: {source} not found (run pytest with --llmcomm-report-dir {args.dir} first)",
              file=sys.stderr)
        return 2
    except (OSError, json.JSONDecodeError) as exc:
        print(f"llmcomm report: cannot read {source}: {exc}", file=sys.stderr)
        return 2
    schema = SessionReport.schema
    if not isinstance(data, dict) or data.get("schema") != schema:
        found = data.get("schema") if isinstance(data, dict) else type(data).__name__
        print(f"llmcomm report: {source} has schema {found!r}, expected {schema!r}", file=sys.stderr)
        return 2
    out = write_html(json_report.load_session_report(source), args.out or args.dir / FILENAME)
    print(out)
    return 0
