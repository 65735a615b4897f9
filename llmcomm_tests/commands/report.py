"""``llmcomm report DIR [--out FILE] [--rebuild]``: the HTML report from a report directory's
session JSON; the JSON itself rebuilt from the item log (``llmcomm-items.jsonl``) when the session
never finished it (killed), or when ``--rebuild`` asks."""

from __future__ import annotations

import sys
from pathlib import Path

from llmcomm_tests.core.arguments import output_file
from llmcomm_tests.report import json_report
from llmcomm_tests.report.html import FILENAME, write_html


def add_arguments(parser) -> None:
    parser.add_argument("dir", metavar="DIR", type=Path,
                        help="report directory holding llmcomm-report.json (the plugin's --llmcomm-report-dir)")
    parser.add_argument("--out", metavar="FILE", type=lambda text: Path(output_file(text)), default=None,
                        help="where to write the HTML (default: DIR/llmcomm-report.html)")
    parser.add_argument("--rebuild", action="store_true",
                        help="make llmcomm-report.json again from llmcomm-items.jsonl (done anyway for a session "
                             "that never finished its report)")


def main(args) -> int:
    source = args.dir / json_report.FILENAME
    items = args.dir / json_report.ITEMS_FILENAME
    try:
        try:
            report = json_report.load_session_report(source)
        except FileNotFoundError:
            if not items.is_file():
                print(f"llmcomm report: {source} not found (run pytest with --llmcomm-report-dir {args.dir} first)",
                      file=sys.stderr)
                return 2
            report = None
        if args.rebuild or report is None or report.exitstatus is None:  # never finished: killed
            report, problems = json_report.rebuild(args.dir)
            for line in problems:
                print(f"llmcomm report: skipped {line}", file=sys.stderr)
            json_report.write(args.dir, report)
            print(f"{source}: rebuilt from {items} ({len(report.items)} case(s), complete: "
                  f"{str(report.complete).lower()})")
        out = write_html(report, args.out or args.dir / FILENAME)
    except FileNotFoundError as exc:
        print(f"llmcomm report: {exc.filename} not found", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # ReportFileError / a damaged document: one line naming the file
        print(f"llmcomm report: {exc}", file=sys.stderr)
        return 2
    except (TypeError, KeyError, AttributeError) as exc:  # content past the checks that cannot be drawn
        print(f"llmcomm report: {source} is damaged: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0
