"""Gate self-test: how often the baseline gate catches a planted slowdown, and how often it cries
wolf on an unchanged run (A/A), at the spec defaults.

    python benchmarks/gate_selftest.py [--trials 20] [--repeats 5] [--baseline-runs 5]
                                       [--faults all_reduce:delay=10%,all_reduce:delay=100%]

Each trial saves a baseline from ``--baseline-runs`` separate runs of the tiny engine under TP 2,
each its own process (``llmcomm run``), as ``--llmcomm-baseline-save`` run in that many sessions
would, then runs once unchanged (A/A) and once per planted fault (A/B), comparing each exactly as
``--llmcomm-baseline-compare`` does.  A/A counts
a false alarm when any time row of the case fails; A/B counts a detection when a row of the faulted
op class fails as slower.  Next to each fault: what it plants per call (the model's,
``benchmarks/planted.py``) beside the change its op rows measured.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmcomm_tests.judging import baseline
from llmcomm_tests.core.documents import RunDocument, from_json
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.runtime.faults import parse_faults
from llmcomm_tests.core.envinfo import Environment
from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.runtime.run_config import RunConfig
from planted import planted_text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=baseline.DEFAULT_THRESHOLD)
    parser.add_argument("--baseline-runs", type=int, default=5)
    parser.add_argument("--faults", default="all_reduce:delay=10%,all_reduce:delay=100%")
    parser.add_argument("--layout", default="2x1")
    args = parser.parse_args()
    faults = parse_faults(args.faults.split(","))
    layout = Layout.parse(args.layout)
    env = Environment.capture().fingerprint()
    sessions = iter(range(10**9))

    def summary(inject=()):
        """One run in its own process (a session of its own: its own drift)."""
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run.json"
            subprocess.run([sys.executable, "-m", "llmcomm_tests.commands", "run", "--engine", "tiny", "--tp",
                            str(layout.tp), "--pp", str(layout.pp), "--prompt-len", "32", "--gen-len", "8",
                            "--repeats", str(args.repeats), "--json", str(out),
                            *[a for f in inject for a in ("--inject", str(f))]],
                           check=True, capture_output=True, timeout=600)
            doc = from_json(RunDocument, json.loads(out.read_text()))
        return baseline.summarize(doc, env, f"session-{next(sessions)}")

    def failed(rows, prefix=None):
        return [r for r in rows if r.verdict == "fail" and r.name != "environment"
                and (prefix is None or (r.name.startswith(prefix) and r.detail.startswith("slower")))]

    false_alarms, detections = 0, {str(f): 0 for f in faults}
    changes, mdes = {str(f): [] for f in faults}, []
    t0 = time.perf_counter()
    for trial in range(args.trials):
        runs = [summary() for _ in range(args.baseline_runs)]
        stored = {"volume": runs[0]["volume"],
                  "runs": [{"env": r["env"], "session": r["session"], "times": r["times"]} for r in runs]}
        if failed(baseline.compare(stored, summary(), args.threshold, None)):
            false_alarms += 1
        for fault in faults:
            rows = baseline.compare(stored, summary([fault]), args.threshold, None)
            hit = [r for r in rows if r.name.startswith(f"op {fault.op} ") and r.measured is not None]
            detections[str(fault)] += bool(failed(rows, f"op {fault.op} "))
            changes[str(fault)] += [r.measured for r in hit]
            mdes += [float(r.detail.split("detects >= ")[1].split("%")[0]) / 100 for r in hit]
        print(f"trial {trial + 1}/{args.trials}: false alarms {false_alarms}, detections {detections}", flush=True)
    n = args.trials
    print(f"\nlayout {layout}, repeats {args.repeats}, baseline runs {args.baseline_runs}, threshold "
          f"{args.threshold:.0%}, {n} trials in {time.perf_counter() - t0:.0f} s")
    print(f"false-alarm rate {false_alarms / n:.0%}  ({false_alarms}/{n}; any time row of the case, A/A)")
    cfg = RunConfig(PRESETS["tiny"], layout, prompt_len=32, gen_len=8)
    for fault in faults:
        c = sorted(changes[str(fault)])
        print(f"detection rate   {detections[str(fault)] / n:.0%}  ({detections[str(fault)]}/{n}) for {fault} "
              f"(plants {planted_text(fault, cfg)}, model); measured change of its op rows: median "
              f"{c[len(c) // 2]:+.1%}" if c else f"{fault}: no rows")
    mdes.sort()
    if mdes:
        print(f"minimum detectable change of the faulted op rows (95% power): median {mdes[len(mdes) // 2]:.0%}")


if __name__ == "__main__":
    main()
