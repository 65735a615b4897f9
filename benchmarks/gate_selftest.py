"""Gate self-test: how often the baseline gate catches a planted 10 % slowdown, how often it cries
wolf on an unchanged run (A/A), at the spec defaults.

    python benchmarks/gate_selftest.py [--trials 20] [--repeats 5] [--fault all_reduce:delay=10%]

Each trial runs the tiny engine under TP 2 (the baseline), then again unchanged (A/A) and again
with the planted fault (A/B), and compares each against the baseline exactly as
``--llmcomm-baseline-compare`` does.  A/A counts a false alarm when any time row fails; A/B counts
a detection when the row of the faulted op class fails as slower.
"""

import argparse
import time

from llmcomm_tests import baseline
from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.execute import RunConfig, run_case
from llmcomm_tests.inject import parse_faults
from llmcomm_tests.session import fingerprint


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=baseline.DEFAULT_THRESHOLD)
    parser.add_argument("--fault", default="all_reduce:delay=10%")
    parser.add_argument("--layout", default="2x1")
    args = parser.parse_args()
    fault = parse_faults([args.fault])[0]
    layout = Layout.parse(args.layout)
    cfg = RunConfig(PRESETS["tiny"], layout, batch=1, prompt_len=32, gen_len=8, repeats=args.repeats, warmup=1)
    env = fingerprint()

    def summary(inject=()):
        return baseline.summarize(run_case(RunConfig(**{**cfg.__dict__, "inject": tuple(inject)})), env)

    false_alarms = detections = 0
    mdes, changes = [], []
    t0 = time.perf_counter()
    for trial in range(args.trials):
        base = summary()
        aa = baseline.compare(base, summary(), args.threshold, None)
        ab = baseline.compare(base, summary([fault]), args.threshold, None)
        time_rows = lambda rows: [r for r in rows if r["name"] in ("ttft", "tpot", "e2e") or r["name"].startswith("op ")]  # noqa: E731
        if any(r["verdict"] == "fail" for r in time_rows(aa)):
            false_alarms += 1
        hit = [r for r in ab if r["name"].startswith(f"op {fault.op} ")]
        if any(r["verdict"] == "fail" and r["detail"].startswith("slower") for r in hit):
            detections += 1
        for r in hit:
            if r["measured"]:
                changes.append(r["measured"]["change"])
                mdes.append(float(r["detail"].split("detects >= ")[1].split("%")[0]) / 100)
        print(f"trial {trial + 1}/{args.trials}: false alarms {false_alarms}, detections {detections}", flush=True)
    n = args.trials
    changes.sort()
    mdes.sort()
    print(f"\nlayout {layout}, repeats {args.repeats}, threshold {args.threshold:.0%}, fault {fault}, "
          f"{n} trials in {time.perf_counter() - t0:.0f} s")
    print(f"detection rate   {detections / n:.0%}  ({detections}/{n})")
    print(f"false-alarm rate {false_alarms / n:.0%}  ({false_alarms}/{n})  (any time row of a case, A/A)")
    if changes:
        print(f"measured change of the faulted class: median {changes[len(changes) // 2]:+.1%}; "
              f"minimum detectable change: median {mdes[len(mdes) // 2]:.0%}")


if __name__ == "__main__":
    main()
