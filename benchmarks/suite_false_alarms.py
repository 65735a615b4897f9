"""How often the shipped CPU suite fails with nothing changed: the session false-alarm rate.

    python benchmarks/suite_false_alarms.py [--runs 10] [--results bench-out/false-alarms.jsonl]
        [--spec slo_specs/tiny-cpu.yaml] [-- extra pytest arguments]
    python benchmarks/suite_false_alarms.py --summary --results bench-out/false-alarms.jsonl

Each run is one unchanged pytest session of the spec (its own process and report folder), as CI
runs it.  One JSON line per run is appended to ``--results`` (outcome, wall time, the failed rows,
the n/a rows, the host anchor and the probes re-run to confirm a failed case, with the failed rows
they did not confirm, the 1-minute load before and after), so batches that fit the host —
tonight's, tomorrow's, another runner's — add up in one file; ``--summary`` reads it alone.  The
table gives the session false-alarm rate with its exact (Clopper–Pearson) 95 % interval, and which
rows raised the alarms.  A run whose session could not complete (exit 2+, no report) counts as an
error, not as a pass.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval of a binomial proportion (k of n)."""
    from scipy.stats import beta

    a = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return low, high


def one_run(spec: str, extra: list[str]) -> dict:
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="llmcomm-fa-") as folder:
        started = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "pytest", spec, "-q", "-p", "no:cacheprovider",
                               f"--llmcomm-report-dir={folder}", *extra], cwd=REPO, capture_output=True, text=True)
        wall = time.monotonic() - started
        report_path = Path(folder) / "llmcomm-report.json"
        report = json.loads(report_path.read_text()) if report_path.is_file() else None
    run = {"when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "exit": proc.returncode, "wall_s": round(wall, 1),
           "load_before": load_before, "load_after": os.getloadavg()[0], "failed_rows": [], "na_rows": 0,
           "cases": 0, "anchor": None}
    if report is None:
        run["error"] = (proc.stdout + proc.stderr).strip().splitlines()[-1:] or ["no report"]
        return run
    run["cases"] = len(report["items"])
    for item in report["items"]:
        for row in item["verdict"]["rows"]:
            if row["verdict"] == "fail":
                run["failed_rows"].append(f"{item['case_id']}: {row['check']} {row['name']}")
                run.setdefault("failed_details", []).append(row["detail"])  # the measured, band and interval
            elif row["verdict"] == "n/a":
                run["na_rows"] += 1
                if row["detail"].startswith("not confirmed"):  # failed, then excused by the re-probe
                    run.setdefault("unconfirmed_rows", []).append(f"{item['case_id']}: {row['check']} {row['name']}")
        if item.get("anchor") and run["anchor"] is None:
            run["anchor"] = item["anchor"]
        if item.get("reprobe"):
            run.setdefault("reprobes", []).append({k: item["reprobe"].get(k) for k in ("after", "outside", "error")})
    return run


def summary(runs: list[dict]) -> str:
    done = [r for r in runs if "error" not in r and r["exit"] in (0, 1)]
    alarms = [r for r in done if r["exit"] == 1]
    low, high = clopper_pearson(len(alarms), len(done)) if done else (0.0, 1.0)
    rows = Counter(row for r in alarms for row in r["failed_rows"])
    anchored = Counter(tuple(sorted((r.get("anchor") or {}).get("outside", {}))) for r in done)
    lines = [f"unchanged sessions: {len(done)} (+{len(runs) - len(done)} that could not complete)",
             f"session false alarms: {len(alarms)}/{len(done)} = {len(alarms) / max(1, len(done)):.1%} "
             f"[95% CI {low:.1%}, {high:.1%}]",
             f"wall time per session: median {sorted(r['wall_s'] for r in done)[len(done) // 2] if done else 0:.0f} s; "
             f"1-minute load before a run: {min((r['load_before'] for r in done), default=0):.1f}-"
             f"{max((r['load_before'] for r in done), default=0):.1f}",
             "host anchor, ops outside their band: " + ("; ".join(f"{', '.join(k) or 'none'} x{n}"
                                                              for k, n in anchored.most_common()) or "-")]
    reprobed = [r for r in done if r.get("reprobes")]
    lines.append(f"sessions where a failed case re-ran the host anchor: {len(reprobed)}; failed rows it did not "
                 f"confirm (n/a): {sum(len(r.get('unconfirmed_rows', [])) for r in done)} in "
                 f"{sum(bool(r.get('unconfirmed_rows')) for r in done)} sessions")
    if rows:
        lines.append("rows that raised them (count):")
        lines += [f"  {n:3d}  {row}" for row, n in rows.most_common()]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--spec", default="slo_specs/tiny-cpu.yaml")
    parser.add_argument("--results", default="bench-out/false-alarms.jsonl")
    parser.add_argument("--summary", action="store_true", help="only print the table of --results")
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    results = Path(args.results)
    if not args.summary:
        results.parent.mkdir(parents=True, exist_ok=True)
        for k in range(args.runs):
            run = one_run(args.spec, extra)
            with results.open("a") as out:
                out.write(json.dumps(run) + "\n")
            print(f"run {k + 1}/{args.runs}: exit {run['exit']}, {run['wall_s']} s, "
                  f"{len(run['failed_rows'])} failed rows", flush=True)
    runs = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    print(summary(runs))


if __name__ == "__main__":
    main()
