"""How well the hardware profile predicts the engine's real op durations on this host.

    python benchmarks/analytic_accuracy.py [--profile cpu-loopback] [--layouts 2x1,4x1,1x2,2x2]
        [--workloads 1:16:8,4:64:8] [--repeats 5] [--warmup 1] [--by-phase]
        [--save DIR] [--load DIR] [--json rows.json]

Runs the tiny engine under each layout and workload (batch:prompt_len:gen_len) and, per op class
(recorded op, group size, role; ``--by-phase`` also splits prefill/decode), prints: records n,
median measured, median predicted (the profile's α-β time for the op's ``msg_bytes``, the
convention of volume.op_instances), the median per-record |pred − meas| / meas, the error of the
medians, and the share of records inside the profile's [lower, upper].  The mapping lives in
``llmcomm_tests.analytic.accuracy`` (shared with the plugin's latency check).

Classes that include waiting for other ranks' compute (``accuracy.WAITING``: recv, broadcast at
a non-root rank, gather at the root) are listed apart as "includes pipeline wait" and left out of
the goals: their duration is the pipeline's schedule, not the link.

Goals (issue 4): median error ≤ 10 % and ≥ 99 % of records inside the bounds, bounded classes.
``--save DIR`` keeps the run documents (e.g. as a calibration set for
``llmcomm calibrate --spread-from DIR``: then evaluate on *other* workloads); ``--load DIR``
re-evaluates saved documents without running.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from llmcomm_tests.analytic.accuracy import WAITING, accuracy_rows, format_rows, summary
from llmcomm_tests.documents import RunDocument, from_json, to_json
from llmcomm_tests.analytic.hardware import load_profile


def _workloads(text: str) -> list[tuple[int, int, int]]:
    out = []
    for item in text.split(","):
        b, sp, sd = (int(x) for x in item.strip().split(":"))
        out.append((b, sp, sd))
    return out


def run_all(layouts: list[str], workloads, repeats: int, warmup: int, dtype: str, save: Path | None) -> list[dict]:
    from llmcomm_tests.engine.config import PRESETS
    from llmcomm_tests.engine.layout import Layout
    from llmcomm_tests.measure import RunConfig, run_case

    docs = []
    for text in layouts:
        layout = Layout.parse(text)
        for b, sp, sd in workloads:
            cfg = RunConfig(PRESETS["tiny"], layout, batch=b, prompt_len=sp, gen_len=sd, dtype=dtype,
                            repeats=repeats, warmup=warmup, keep_records=True)
            t0 = time.perf_counter()
            doc = run_case(cfg, timeout_s=300)
            print(f"  ran {layout} batch {b} prompt {sp} gen {sd}: {len(doc.records)} records, "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
            docs.append(doc)
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                (save / f"{layout}-b{b}-p{sp}-g{sd}-{dtype}.json").write_text(json.dumps(to_json(doc)))
    return docs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu-loopback", help="hardware profile name or YAML path")
    parser.add_argument("--layouts", default="2x1,4x1,1x2,2x2", help="comma-separated TxP")
    parser.add_argument("--workloads", default="1:16:8,4:64:8", help="batch:prompt_len:gen_len, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--by-phase", action="store_true", help="split op classes by phase")
    parser.add_argument("--save", type=Path, default=None, help="write each run document into this directory")
    parser.add_argument("--load", type=Path, default=None, help="evaluate saved run documents (*.json) instead")
    parser.add_argument("--json", dest="json_path", default=None, help="write the rows and summary here")
    args = parser.parse_args(argv)

    profile = load_profile(args.profile)
    if args.load:
        docs = [from_json(RunDocument, json.loads(p.read_text())) for p in sorted(args.load.glob("*.json"))]
        what = f"{len(docs)} saved run documents from {args.load}"
    else:
        docs = run_all([x for x in args.layouts.split(",") if x.strip()], _workloads(args.workloads), args.repeats,
                       args.warmup, args.dtype, args.save)
        what = (f"tiny engine, layouts {args.layouts}, workloads {args.workloads} (batch:prompt:gen), "
                f"{args.dtype}, repeats {args.repeats}, warmup {args.warmup}")
    rows = accuracy_rows(docs, profile, by_phase=args.by_phase)
    s = summary(rows)
    print(f"# analytic accuracy: {what}")
    print(f"# profile {profile.name} ({profile.source or profile.description}); host: {os.cpu_count()} cores")
    print(format_rows(rows))
    print()
    print(f"bounded classes: {s['classes']}, records {s['records']}: {s['inside_share']:.2%} inside "
          f"[lower, upper] ({s['below_lower']} below the floor, {s['above_upper']} above the upper bound)")
    print(f"goal >= 99 % inside per class: {_verdict(s['bounds_misses'])}")
    print(f"goal median |pred - meas| / meas <= 10 % per class: {_verdict(s['error_misses'])}")
    print(f"(error of the medians <= 10 %: {_verdict(s['median_error_misses'])})")
    print(f"not bounded (includes pipeline wait): {s['waiting_records']} records")
    for (op, role), why in WAITING.items():
        print(f"  {op}{' at the ' + role if role else ''}: {why}")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"profile": profile.name, "what": what, "rows": rows,
                       "summary": {k: v for k, v in s.items() if not k.endswith("misses")}}, f, indent=1)
    return 0


def _verdict(misses: list[dict]) -> str:
    return "met" if not misses else "missed by " + ", ".join(_name(r) for r in misses)


def _name(row: dict) -> str:
    return f"{row['op']}/{row['group_size']}{'/' + row['role'] if row['role'] else ''}" + \
        (f"/{row['phase']}" if row["phase"] != "all" else "")


if __name__ == "__main__":
    sys.exit(main())
