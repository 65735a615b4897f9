"""A/B gate self-test: how often the paired gate catches a fault planted in arm B only, and how
often it alarms on two identical arms (A/A), with the wall time and pairs each comparison used.

    python benchmarks/ab_selftest.py [--trials 20] [--python-b PATH] [--repeats 5] [--max-pairs 40]
        [--faults all_reduce:delay=10%,all_reduce:delay=5%,all_reduce:extra=1] [--threshold 0.05]

Each trial runs one A/A comparison (both arms this interpreter, two separate arm servers) and
one A/B comparison per fault (arm B: ``--python-b``, default this interpreter, with the fault),
and prints next to each fault what it plants per call (the model's, ``benchmarks/planted.py``)
beside the change the gate measured,
of the tiny engine under TP 2 (``--layout``), seed = trial number.  A/A counts a false alarm when
any row fails; a delay counts as detected when a row of the faulted op fails as slower, an extra
collective when a volume row fails ("case failed" counts a failure of any row).
"""

import argparse
import dataclasses
import sys
import time

from llmcomm_tests.judging.ab import gate
from llmcomm_tests.judging.ab.paired import DEFAULT_THRESHOLD
from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.runtime.faults import parse_fault
from llmcomm_tests.runtime.run_config import RunConfig
from planted import planted_text


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--python-b", default=sys.executable)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--max-pairs", type=int, default=gate.DEFAULT_MAX_PAIRS)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--faults", default="all_reduce:delay=10%,all_reduce:delay=5%,all_reduce:extra=1")
    parser.add_argument("--layout", default="2x1")
    args = parser.parse_args()
    faults = [parse_fault(f) for f in args.faults.split(",") if f]
    cfg = RunConfig(PRESETS["tiny"], Layout.parse(args.layout), batch=1, prompt_len=32, gen_len=8,
                    repeats=args.repeats, warmup=1)
    arm_a, arm_a2 = gate.arm("A", sys.executable), gate.arm("A2", sys.executable)
    arm_b = gate.arm("B", args.python_b)
    print(f"arm A {arm_a.env.executable}; A/A second arm {arm_a2.env.executable}; arm B {arm_b.env.executable}")
    print(f"A→B: {gate.env_difference(arm_a.env, arm_b.env)}")
    modes = [("A/A", None)] + [(str(f), f) for f in faults]
    planted = {mode: planted_text(fault, cfg) if fault else "-" for mode, fault in modes}
    for mode, fault in modes[1:]:
        print(f"{mode}: plants {planted[mode]} (model, cpu-loopback)")
    tally = {m: {"hits": 0, "case": 0, "pairs": [], "wall": [], "change": []} for m, _ in modes}
    t0 = time.perf_counter()
    try:
        for trial in range(args.trials):
            for mode, fault in modes:
                other = arm_a2 if fault is None else arm_b
                cfg_b = dataclasses.replace(cfg, inject=(fault,) if fault else ())
                res = gate.compare_arms(cfg, cfg_b, arm_a, other, threshold=args.threshold,
                                        max_pairs=args.max_pairs, seed=trial)
                hit = detected(res, fault)
                t = tally[mode]
                t["hits"] += hit
                t["case"] += bool([r for r in res.failed if r.name != "ab environment"])
                t["pairs"].append(res.pairs)
                t["wall"].append(res.wall_s)
                c = faulted_change(res, fault)
                if c is not None:
                    t["change"].append(c.change)
                shown = f"{c.metric} {c.describe()}" if c else ""
                print(f"trial {trial + 1:2d} {mode:24s} {'ALARM' if hit and fault is None else 'caught' if hit else '-':6s} "
                      f"pairs {res.pairs:3d} {res.wall_s:5.0f} s  stop: {res.stopped}; {shown}", flush=True)
                if res.error:
                    print(f"    error: {res.error.splitlines()[0]}")
    finally:
        gate.close_arms()
    n = args.trials
    print(f"\ntiny {args.layout}, repeats {args.repeats}, threshold {args.threshold:.0%}, max pairs "
          f"{args.max_pairs}, {n} trials, {time.perf_counter() - t0:.0f} s in all")
    print(f"{'comparison':26s} {'rate':>12s} {'case failed':>11s} {'pairs p50':>9s} {'max':>4s} {'wall p50 s':>10s} "
          f"{'max s':>6s} {'measured change p50':>19s}  planted (model)")
    for mode, fault in modes:
        t = tally[mode]
        pairs, wall, ch = sorted(t["pairs"]), sorted(t["wall"]), sorted(t["change"])
        label = "false alarms" if fault is None else "detected"
        rate = f"{t['hits']}/{n} {label[:5]}"
        print(f"{mode:26s} {rate:>12s} {t['case']:>7d}/{n:<3d} {pairs[len(pairs) // 2]:9d} {pairs[-1]:4d} {wall[len(wall) // 2]:10.0f} "
              f"{wall[-1]:6.0f} {ch[len(ch) // 2] if ch else float('nan'):+19.1%}  {planted[mode]}")


if __name__ == "__main__":
    main()
