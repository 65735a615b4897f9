"""A/B gate self-test: how often the paired gate catches a fault planted in arm B only, and how
often it alarms on two identical arms (A/A), with the wall time and pairs each comparison used.

    python benchmarks/ab_selftest.py [--trials 20] [--first-trial 0] [--python-b PATH] [--repeats 5]
        [--max-pairs 40] [--faults all_reduce:delay=10%,all_reduce:delay=5%,all_reduce:extra=1]
        [--no-aa] [--threshold 0.05] [--results bench-out/ab-selftest.jsonl]
    python benchmarks/ab_selftest.py --summary [--results bench-out/ab-selftest.jsonl]

Each trial runs one A/A comparison (both arms this interpreter, two separate arm servers; not with
``--no-aa``) and one A/B comparison per fault (arm B: ``--python-b``, default this interpreter,
with the fault), of the tiny engine under TP 2 (``--layout``), seed = trial number.  A/A counts a
false alarm when any row fails; a delay counts as detected when a row of the faulted op fails as
slower, an extra collective when a volume row fails ("case failed" counts a failure of any row).

One JSON line per comparison is appended to ``--results``, so batches that fit the host add up
(``--first-trial`` continues the seeds); the table is always printed from the whole file: per
condition, the rate with its exact (Clopper–Pearson) 95 % interval, pairs and wall time, and the
change the gate measured on the faulted op next to what the fault plants per call (the model's,
``benchmarks/planted.py``).
"""

import argparse
import dataclasses
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from llmcomm_tests.judging.ab import gate
from llmcomm_tests.judging.ab.paired import DEFAULT_THRESHOLD
from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.runtime.faults import parse_fault
from llmcomm_tests.runtime.run_config import RunConfig
from planted import planted_text
from suite_false_alarms import clopper_pearson


def detected(result, fault) -> bool:
    failed = [r for r in result.failed if r.name not in ("ab environment",)]
    if fault is None:
        return bool(failed)
    if fault.kind == "extra":
        return any(r.name.startswith("ab volume ") for r in failed)
    return any(r.name.startswith(f"ab op {fault.op} ") for r in failed)


def faulted_change(result, fault):
    rows = [c for c in result.changes if fault is not None and c.metric.startswith(f"op {fault.op} ")
            and c.metric.endswith("transfer")]
    if fault is None:
        rows = sorted(result.changes, key=lambda c: -abs(c.change))[:1]
    return rows[0] if rows else None


def summary(records: list[dict]) -> str:
    """The table of comparison records (this file's, ``link_slowdown_ab.py``'s): per condition in
    the order first run, A/A first."""
    by_mode: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_mode[r["mode"]].append(r)
    settings = sorted({(r.get("engine", "tiny"), r["layout"], r["repeats"], r["threshold"], r["max_pairs"])
                       for r in records})
    lines = [f"(engine, layout, repeats, threshold, max pairs): {settings}; "
             f"{sum(r['wall_s'] for r in records):.0f} s of comparisons in all",
             f"{'comparison':24s} {'rate [95% CI]':>30s} {'case failed':>11s} {'pairs p50':>9s} {'max':>4s} "
             f"{'wall p50 s':>10s} {'max s':>6s} {'measured p50':>12s}  planted (model)"]
    for mode in sorted(by_mode, key=lambda m: m != "A/A"):  # then in the order first run
        rs = by_mode[mode]
        n, hits = len(rs), sum(r["hit"] for r in rs)
        low, high = clopper_pearson(hits, n)
        pairs, wall = sorted(r["pairs"] for r in rs), sorted(r["wall_s"] for r in rs)
        changes = sorted(r["change"] for r in rs if r["change"] is not None)
        label = "false alarms" if mode == "A/A" else "detected"
        lines.append(f"{mode:24s} {f'{hits}/{n} {label} [{low:.0%}, {high:.0%}]':>30s} "
                     f"{sum(r['case_failed'] for r in rs):>7d}/{n:<3d} {pairs[n // 2]:9d} {pairs[-1]:4d} "
                     f"{wall[n // 2]:10.0f} {wall[-1]:6.0f} "
                     f"{changes[len(changes) // 2] if changes else float('nan'):+12.1%}  {rs[-1]['planted']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--first-trial", type=int, default=0, help="seed of the first trial (continue a batch)")
    parser.add_argument("--python-b", default=sys.executable)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-pairs", type=int, default=gate.DEFAULT_MAX_PAIRS)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--faults", default="all_reduce:delay=10%,all_reduce:delay=5%,all_reduce:extra=1")
    parser.add_argument("--no-aa", action="store_true", help="only the faults, no A/A comparison")
    parser.add_argument("--layout", default="2x1")
    parser.add_argument("--results", default="bench-out/ab-selftest.jsonl")
    parser.add_argument("--summary", action="store_true", help="only print the table of --results")
    args = parser.parse_args()
    results = Path(args.results)
    if not args.summary:
        results.parent.mkdir(parents=True, exist_ok=True)
        run_trials(args, results)
    print(summary([json.loads(line) for line in results.read_text().splitlines() if line.strip()]))


def run_trials(args, results: Path) -> None:
    faults = [parse_fault(f) for f in args.faults.split(",") if f]
    cfg = RunConfig(PRESETS["tiny"], Layout.parse(args.layout), batch=1, prompt_len=32, gen_len=8,
                    repeats=args.repeats, warmup=1)
    arm_a, arm_a2 = gate.arm("A", sys.executable), gate.arm("A2", sys.executable)
    arm_b = gate.arm("B", args.python_b)
    print(f"arm A {arm_a.env.executable}; A/A second arm {arm_a2.env.executable}; arm B {arm_b.env.executable}")
    print(f"A→B: {gate.env_difference(arm_a.env, arm_b.env)}")
    modes = ([] if args.no_aa else [("A/A", None)]) + [(str(f), f) for f in faults]
    planted = {mode: planted_text(fault, cfg) if fault else "-" for mode, fault in modes}
    for mode, fault in modes:
        if fault is not None:
            print(f"{mode}: plants {planted[mode]} (model, cpu-loopback)")
    try:
        for trial in range(args.first_trial, args.first_trial + args.trials):
            for mode, fault in modes:
                other = arm_a2 if fault is None else arm_b
                cfg_b = dataclasses.replace(cfg, inject=(fault,) if fault else ())
                res = gate.compare_arms(cfg, cfg_b, arm_a, other, threshold=args.threshold,
                                        max_pairs=args.max_pairs, seed=trial)
                hit = detected(res, fault)
                c = faulted_change(res, fault)
                record = {"when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "trial": trial, "mode": mode,
                          "hit": hit, "case_failed": bool([r for r in res.failed if r.name != "ab environment"]),
                          "pairs": res.pairs, "wall_s": round(res.wall_s, 1), "stopped": res.stopped,
                          "metric": c.metric if c else None, "change": c.change if c else None,
                          "planted": planted[mode], "engine": "tiny", "layout": args.layout, "repeats": args.repeats,
                          "threshold": args.threshold, "max_pairs": args.max_pairs, "error": res.error}
                with results.open("a") as out:
                    out.write(json.dumps(record) + "\n")
                shown = f"{c.metric} {c.describe()}" if c else ""
                print(f"trial {trial + 1:2d} {mode:24s} {'ALARM' if hit and fault is None else 'caught' if hit else '-':6s} "
                      f"pairs {res.pairs:3d} {res.wall_s:5.0f} s  stop: {res.stopped}; {shown}", flush=True)
                if res.error:
                    print(f"    error: {res.error.splitlines()[0]}")
    finally:
        gate.close_arms()


if __name__ == "__main__":
    main()
