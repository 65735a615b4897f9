"""How far each judged transfer centre moves between unchanged runs, next to the model's error.

    pytest slo_specs/tiny-cpu.yaml && cp reports/llmcomm-report.json run1.json   # … several times
    python benchmarks/centre_spread.py run1.json run2.json run3.json …

Per op class (op, group, role, ranks in the case) it prints two medians over (row, run):
- the *spread*: |centre / the same row's median centre over the runs − 1|, the error that a
  perfect model of each row would still show.  No fixed model can get below it.
- the model's *error*: |centre / model − 1|, what `analytic_accuracy.py` reports on other runs.
An error far above the spread is a bias of the model or of its calibration's conditions, not noise.
The runs must use one profile: a row's model must not change between them.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

from llmcomm_tests.report.json_report import load_session_report
from llmcomm_tests.core.stats import median, percentile
from llmcomm_tests.core.text import text_table


def centres(paths) -> dict[tuple, list[tuple[float, float]]]:
    """(case, row name) → [(measured centre, model)] over the reports, judged rows only."""
    out = defaultdict(list)
    for path in paths:
        for result in load_session_report(path).items:
            for row in result.verdict.rows:
                if row.check == "latency" and row.name.endswith("transfer centre") and row.verdict != "n/a":
                    world = result.run.case.tp * result.run.case.pp
                    out[(result.case_id, world, row.name)].append((row.measured, row.model))
    return out


def op_class(world: int, row_name: str) -> str:
    """'gather decode lm_head /4 peer transfer centre' in a 4-rank case → 'gather /4 peer W4'."""
    words = row_name.split()
    role = words[4] if words[4] in ("root", "peer") else ""
    return " ".join(w for w in (words[0], words[3], role, f"W{world}") if w)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="llmcomm-report.json files of unchanged runs")
    parser.add_argument("--min-runs", type=int, default=3, help="rows judged in fewer runs are left out")
    args = parser.parse_args()
    spread, error = defaultdict(list), defaultdict(list)
    for (_, world, name), values in centres(args.reports).items():
        if len(values) < args.min_runs:
            continue
        typical = median([m for m, _ in values])
        key = op_class(world, name)
        spread[key] += [abs(m / typical - 1) for m, _ in values]
        error[key] += [abs(m / model - 1) for m, model in values]

    def pct(xs, q):
        return f"{percentile(xs, q):.0%}"

    rows = [(key, pct(spread[key], 50), pct(spread[key], 90), pct(error[key], 50), pct(error[key], 90),
             len(spread[key])) for key in sorted(spread)]
    print(f"{len(args.reports)} runs; spread = |centre / the row's median over runs - 1|, error = |centre / model - 1|")
    print(text_table(("op class", "spread med", "spread p90", "error med", "error p90", "rows x runs"), rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
