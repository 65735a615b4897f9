"""Measured vs predicted on the emulated two-node cluster: 4 layouts x link rates.

    python benchmarks/two_tier_study.py [--rates 200mbit,1gbit] [--repeats 5] [--json out.json]

Needs CAP_NET_ADMIN (network namespaces).  Per rate: cluster up, two-tier calibration (sweeps +
a 1-rank compute run), the four layouts through the node launcher, cluster down.  Prints the
table (TPOT / TTFT measured and predicted, wire bytes per token per tier, the kernel's count of
bytes sent on the shaped interfaces) and the predicted vs measured order of TPOT.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from llmcomm_tests.runtime import netns
import cluster_study as study  # noqa: E402  (this folder is first on the path when run as a script)
from llmcomm_tests.engine.config import resolve_engine  # noqa: E402
from llmcomm_tests.engine.layout import Layout  # noqa: E402
from llmcomm_tests.runtime.measure import run_engine
from llmcomm_tests.runtime.run_config import RunConfig  # noqa: E402

ORDER_MARGIN = 1.25  # as tests/test_cluster.py: TPOT's A/A spread (docs/measurements.md#timing-noise-between-sessions)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rates", default="200mbit,1gbit")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved launches of every layout")
    parser.add_argument("--sweep-repeats", type=int, default=6)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    ok, why = netns.can_create_namespaces()
    if not ok:
        print(f"skipped: {why}")
        return 0
    w = study.StudySettings(repeats=args.repeats)
    shape = resolve_engine(w.engine)
    cores = os.cpu_count() or 1
    t0 = time.time()
    compute_doc = run_engine(RunConfig(shape, Layout(1, 1), batch=w.batch, prompt_len=w.prompt_len,
                                     gen_len=w.gen_len, dtype=w.dtype, repeats=w.repeats, warmup=w.warmup))
    m = compute_doc.metrics
    print(f"# 1-rank compute run: TTFT {m.ttft.p50 * 1e3:.1f} ms, TPOT {m.tpot.p50 * 1e3:.2f} ms "
          f"(p50; the profile takes the minimum {min(m.tpot.samples) * 1e3:.2f} ms)")
    results, profiles = [], {}
    for rate in args.rates.split(","):
        cluster = netns.up_owned(2, 2, rate)
        try:
            profile, rows = study.calibrated_profile(cluster, shape, compute_doc, args.sweep_repeats)
            profiles[rate] = profile.to_dict()
            docs = {layout: [] for layout in study.LAYOUTS}
            for _ in range(args.rounds):  # interleaved: drift of the host's load hits every layout alike
                for layout in study.LAYOUTS:
                    docs[layout].append(study.run_layout(cluster, layout, w))
            for layout in study.LAYOUTS:
                r = study.compare(docs[layout], profile, shape, layout, w, cores)
                r["rate"] = rate
                r["tokens"] = docs[layout][0].doc.tokens
                results.append(r)
                print(f"# {rate} {layout}: TPOT min {r['tpot_measured_s'] * 1e3:.2f} ms p50 {r['tpot_p50_s'] * 1e3:.2f} "
                      f"ms measured, {r['tpot_predicted_s'] * 1e3:.2f} ms predicted", flush=True)
        finally:
            netns.release(cluster)
    print(study.format_study_table(results))
    for rate in args.rates.split(","):
        mine = [r for r in results if r["rate"] == rate]
        meas = [r["layout"] for r in sorted(mine, key=lambda r: r["tpot_measured_s"])]
        pred = [r["layout"] for r in sorted(mine, key=lambda r: r["tpot_predicted_s"])]
        # the test's rule (tests/test_cluster.py): only pairs the model separates by > ORDER_MARGIN
        pairs = [(a, b) for a in mine for b in mine if b["tpot_predicted_s"] > ORDER_MARGIN * a["tpot_predicted_s"]]
        wrong = [f"{a['layout']}<{b['layout']}" for a, b in pairs if not a["tpot_measured_s"] < b["tpot_measured_s"]]
        print(f"{rate}: {len(pairs)} pairs separated by > {ORDER_MARGIN}x in prediction; measured inversions: "
              f"{wrong or 'none'}")
        inter_m = [r["layout"] for r in sorted(mine, key=lambda r: (r["inter_bytes_per_token_measured"], r["layout"]))]
        inter_p = [r["layout"] for r in sorted(mine, key=lambda r: (r["inter_bytes_per_token_predicted"], r["layout"]))]
        print(f"{rate}: TPOT order measured {meas} predicted {pred} {'MATCH' if meas == pred else 'DIFFER'}; "
              f"inter bytes order measured {inter_m} predicted {inter_p}")
    print(f"# {time.time() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "profiles": profiles}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
