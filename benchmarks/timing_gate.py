"""Timing verdicts that can fail: the shipped CPU spec's cases, no stored baseline, run again and again.

    python benchmarks/timing_gate.py [--trials 20] [--faults-trials 3] [--spec slo_specs/tiny-cpu.yaml]

For tiny TP2, PP2 and TP2×PP2 (the spec's first workload) it counts how often an unchanged run
passes every check (A/A: the goal is ≥ 19 of 20), and whether a planted delay fails the latency
check: ``all_reduce:delay=2ms`` (``send:delay=2ms`` where no all-reduce runs) and ``…:delay=100%``
(the model's time for each call once more), each with what it plants per call (``benchmarks/planted.py``).
Each run is a fresh launch of the ranks, checked exactly as the plugin checks a case (the spec's
budgets, the session's hardware profile).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from llmcomm_tests.suite.options import LLMCommOptions
from llmcomm_tests.suite.case_run import run_and_check
from llmcomm_tests.suite.session import LLMCommSession
from llmcomm_tests.spec import load_spec
from llmcomm_tests.core.text import text_table
from llmcomm_tests.runtime.fault_spec import parse_fault
from llmcomm_tests.runtime.run_config import RunConfig
from planted import planted_text

LAYOUTS = ("tp2-pp1", "tp1-pp2", "tp2-pp2")


def session(inject: tuple[str, ...] = ()) -> LLMCommSession:
    return LLMCommSession(LLMCommOptions(gpus=None, backend="gloo", hardware=None, report_dir="reports",
                                         repeats=None, timeout=300.0, baseline_save=None, baseline_compare=None,
                                         baseline_dir=".llmcomm/baselines", inject=inject))


def failing(result, check: str | None = None) -> list[str]:
    return [f"{r.check} {r.name}" for r in result.verdict.failed if check is None or r.check == check]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=Path("slo_specs/tiny-cpu.yaml"))
    parser.add_argument("--trials", type=int, default=20, help="unchanged runs per layout (A/A)")
    parser.add_argument("--faults-trials", type=int, default=3, help="runs per planted fault and layout")
    args = parser.parse_args()
    cases = {}
    for case in load_spec(args.spec).cases():
        layout = str(case.layout)
        if layout in LAYOUTS and layout not in cases:
            cases[layout] = case
    clean = session()
    rows, t0 = [], time.perf_counter()
    for layout, case in cases.items():
        op = "all_reduce" if case.layout.tp > 1 else "send"
        passes, reasons = 0, []
        for _ in range(args.trials):
            result = run_and_check(case, clean)
            passes += result.passed
            reasons += failing(result)
        caught = {}
        for fault in (f"{op}:delay=2ms", f"{op}:delay=100%"):
            planted = session((fault,))
            hits = [bool(failing(run_and_check(case, planted), "latency")) for _ in range(args.faults_trials)]
            plants = planted_text(parse_fault(fault), RunConfig.for_case(case))
            caught[fault] = f"{sum(hits)}/{len(hits)} (plants {plants})"
        rows.append((case.id, f"{passes}/{args.trials}", *caught.values(),
                     "; ".join(sorted(set(reasons)))[:120] or "-"))
        print(f"{case.id}: A/A {passes}/{args.trials}, planted {caught}", file=sys.stderr, flush=True)
    print(f"spec {args.spec}, profile {clean.hardware}, {time.perf_counter() - t0:.0f} s")
    print(text_table(("case", "A/A passed", "delay=2ms caught", "delay=100% caught", "A/A failures"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
