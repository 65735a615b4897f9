"""``llmcomm budgets suggest DIR [--margin 2] [--spec NAME]``: SLO budgets from a measured session.

For each spec in ``DIR/llmcomm-report.json``, every time budget a spec can carry (TTFT, TPOT, E2E,
ITL, comm time and wait per token) is set to the largest p99 its cases measured times ``--margin``,
and bytes per token to the largest measured value (bytes are exact: no margin).  The output is the
``budgets:`` block to paste into the spec, with the margin, the hardware and the session it came
from in a comment — so the budget is a stated margin over a measured run, not a guess, and the
same command regenerates it after a recalibration.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from llmcomm_tests.core.text import seconds
from llmcomm_tests.report import json_report

TIME_METRICS = {  # budget metric -> the run document's distribution
    "ttft": lambda run: run.metrics.ttft, "tpot": lambda run: run.metrics.tpot, "e2e": lambda run: run.metrics.e2e,
    "itl": lambda run: run.metrics.itl, "comm_time_per_token": lambda run: run.comm.time_per_token,
    "wait_per_token": lambda run: run.comm.wait_per_token,
}
MAX_MARGIN = 3.0  # a budget further above the measurement than this cannot catch a regression


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    suggest = sub.add_parser("suggest", help="print budgets YAML from a report directory")
    suggest.add_argument("dir", metavar="DIR", type=Path, help="report directory holding llmcomm-report.json")
    suggest.add_argument("--margin", type=float, default=2.0, help=f"multiple of the measured p99 (1 < m <= {MAX_MARGIN:g})")
    suggest.add_argument("--spec", default=None, help="only this spec (default: every spec in the report)")


def parse_margin(value: float) -> float:
    if not 1.0 < value <= MAX_MARGIN:
        raise ValueError(f"--margin {value:g}: must be above 1 and at most {MAX_MARGIN:g}")
    return value


def suggest(report, margin: float, spec: str | None = None) -> str:
    """The budgets YAML for each spec of ``report`` (a ``SessionReport``)."""
    by_spec: dict[str, list] = {}
    for item in report.items:
        if item.run is not None and (spec is None or item.spec == spec):
            by_spec.setdefault(item.spec, []).append(item)
    if not by_spec:
        raise ValueError(f"no measured case{' of spec ' + spec if spec else ''} in the report")
    out = []
    for name, items in sorted(by_spec.items()):
        out.append(f"# {name}: budgets = {margin:g} x the largest p99 over {len(items)} case(s) measured on "
                   f"{report.hardware} ({report.env.get('host', '?')}, torch {report.env.get('torch', '?')}); "
                   f"regenerate: llmcomm budgets suggest <report dir> --margin {margin:g} --spec {name}")
        out.append("budgets:")
        out.append(f"  hardware: {report.hardware}")
        for metric, of in TIME_METRICS.items():
            worst = max((of(it.run).p99 for it in items if of(it.run).n), default=None)
            if worst:
                out.append(f"  {metric}: {{p99: {_duration(worst * margin)}}}  # measured p99 {seconds(worst)}")
        bytes_per_token = max(it.run.comm.bytes_per_token for it in items)
        if bytes_per_token:
            out.append(f"  bytes_per_token: {{max: {int(bytes_per_token)}}}  # exact: every layout's bytes are fixed")
        out.append("")
    return "\n".join(out)


def _duration(s: float) -> str:
    """A duration as a spec writes it, rounded up to 2 significant digits (never below the value)."""
    for unit, scale in (("s", 1.0), ("ms", 1e3), ("us", 1e6)):
        v = s * scale
        if v >= 1 or unit == "us":
            step = 10.0 ** (math.floor(math.log10(v)) - 1)
            return f"{round(math.ceil(v / step - 1e-9) * step, 6):g}{unit}"
    raise AssertionError("unreachable")


def main(args) -> int:
    source = args.dir / json_report.FILENAME
    try:
        margin = parse_margin(args.margin)
        report = json_report.load_session_report(source)
        print(suggest(report, margin, args.spec))
    except FileNotFoundError:
        print(f"llmcomm budgets: {source} not found (run pytest with --llmcomm-report-dir {args.dir} first)",
              file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:  # each names the file (json_report.load_session_report)
        print(f"llmcomm budgets: {exc}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, AttributeError) as exc:
        print(f"llmcomm budgets: {source} is damaged: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    return 0
