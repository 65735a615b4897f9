"""How well the hardware profile predicts the engine's real op durations on this host.

    python benchmarks/analytic_accuracy.py [--profile cpu-loopback] [--layouts 2x1,4x1,1x2,2x2]
        [--workloads 1:16:8,4:64:8] [--repeats 5] [--warmup 1] [--by-phase]
        [--save DIR] [--load DIR] [--json rows.json] [--before OLD_PROFILE.yaml] [--transfer-only]

Runs the tiny engine under each layout and workload (batch:prompt_len:gen_len) and, per op class
(recorded op, group size, role; ``--by-phase`` also splits prefill/decode), prints: records n,
median measured, median predicted (the profile's α-β time for the op's ``msg_bytes``, the
convention of volume.op_instances), the median per-record |pred − meas| / meas, the error of the
medians, and the share of records inside the profile's [lower, upper].  The mapping lives in
``llmcomm_tests.analytic.accuracy`` (shared with the plugin's latency check).

Classes that include waiting for other ranks' compute (``accuracy.WAITING``: recv, broadcast at
a non-root rank, gather at the root) are listed apart as "includes pipeline wait" and left out of
the goals: their duration is the pipeline's schedule, not the link.

Goals: median error ≤ 10 % and ≥ 99 % of records inside the bounds, bounded classes.

Transfer centre (``transfer_rows``): what the latency check judges.  For every
class the check judges (op, phase, site, group, role, bytes per call) in every run document — a
*case* — the error of the centre is |median transfer − model| / model (transfer: completion − the
last peer's arrival, ``runtime/arrival.py``), and per op class (op, group size, role) the table gives the
median and p90 of that error over the cases, the share of cases whose median sits inside the
profile's band [band_lo, band_hi] × model, and whose ``tail_q`` quantile stays under tail_k ×
model.  ``--before OLD.yaml`` adds the same error for the *whole call duration* against the old
profile's model — how the check judged before (e.g. the shipped profile before the engine-conditions
calibration: ``git show a171516:llmcomm_tests/analytic/profiles/cpu-loopback.yaml > before.yaml``).
Target: median |error| of the transfer centre ≤ 15 % per op class.
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

import statistics

from collections import defaultdict

from llmcomm_tests.analytic import latency
from llmcomm_tests.analytic.accuracy import WAITING, accuracy_rows, format_rows, instance, summary
from llmcomm_tests.core.documents import RunDocument, from_json, to_json
from llmcomm_tests.core.stats import percentile
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
    from llmcomm_tests.runtime.measure import run_engine
    from llmcomm_tests.runtime.run_config import RunConfig

    docs = []
    for text in layouts:
        layout = Layout.parse(text)
        for b, sp, sd in workloads:
            cfg = RunConfig(PRESETS["tiny"], layout, batch=b, prompt_len=sp, gen_len=sd, dtype=dtype,
                            repeats=repeats, warmup=warmup, keep_records=True)
            t0 = time.perf_counter()
            doc = run_engine(cfg, timeout_s=300)
            print(f"  ran {layout} batch {b} prompt {sp} gen {sd}: {len(doc.records)} records, "
                  f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
            docs.append(doc)
            if save is not None:
                save.mkdir(parents=True, exist_ok=True)
                (save / f"{layout}-b{b}-p{sp}-g{sd}-{dtype}.json").write_text(json.dumps(to_json(doc)))
    return docs


TRANSFER_GOAL = 0.15  # median |median transfer - model| / model per op class


def _band(profile, summary, variant: bool, world: int):
    """``latency.transfer_band`` of one judged class: the pooled fit, or (``variant``) the fit's
    variant for the class's role and the run's world size.  None where the model times nothing."""
    inst = instance(summary.op, summary.ranks, summary.bytes)
    if inst is None:
        return None
    role = latency.transfer_role(summary.op, summary.role) if variant else ""
    band = latency.transfer_band(profile, inst["op"], inst["group_size"], inst["msg_bytes"],
                                 profile.tier_of(inst["ranks"]), role=role, world_size=world if variant else None)
    return band if band[0] > 0 else None


def transfer_rows(docs, profile, before=None) -> list[dict]:
    """Per op class (op, group size, role) and world size: over the cases (each judged class of
    each document), the median and p90 of |median transfer − model| / model against the pooled fit
    (what the check reads) and against the fit's variant for the role and world size, the
    share of cases whose median sits in the band and whose tail quantile stays under the tail
    allowance; with ``before`` (a profile), the same error of the whole call's median against
    that profile's model (how the whole call was judged before)."""
    per_class: dict = {}
    for doc in docs:
        world = doc.case.world_size
        merged: dict = {}
        for s in doc.ops:
            key = (s.name, s.role, s.bytes)
            if key in merged:
                first, transfer, duration = merged[key]
                merged[key] = (first, _merge(transfer, s.transfer), _merge(duration, s.latency))
            else:
                merged[key] = (s, s.transfer, s.latency)
        for s, transfer, duration in merged.values():
            pooled, variant = _band(profile, s, False, world), _band(profile, s, True, world)
            if pooled is None or transfer is None or not transfer.count:
                continue
            op_class = (s.op, "p2p" if s.op in ("send", "recv") else len(s.ranks), s.role, world)
            acc = per_class.setdefault(op_class, defaultdict(list))
            centre = transfer.p50
            acc["n"].append(transfer.count)
            for name, band in (("pooled", pooled), ("variant", variant)):
                model, low, high, tail_q, tail_s = band
                acc[name].append(abs(centre - model) / model)
                acc[name + "_ratio"].append(centre / model)
                acc[name + "_in_band"].append(low <= centre <= high)
                acc[name + "_tail_ok"].append(transfer.quantile(tail_q) <= tail_s)
            if before is not None and duration is not None and duration.count:
                old = _band(before, s, False, world)
                if old is not None:
                    acc["before"].append(abs(duration.p50 - old[0]) / old[0])
    rows = []
    for (op, group, role, world), acc in sorted(per_class.items(), key=lambda kv: tuple(map(str, kv[0]))):
        row = {"op": op, "group_size": group, "role": role, "world_size": world, "cases": len(acc["n"]),
               "n": sum(acc["n"])}
        for name in ("before", "pooled", "variant"):
            errs = acc[name]
            row[f"{name}_median_err"] = statistics.median(errs) if errs else None
            row[f"{name}_p90_err"] = percentile(errs, 90) if errs else None
        for name in ("pooled", "variant"):
            row[f"{name}_median_ratio"] = statistics.median(acc[name + "_ratio"])
            row[f"{name}_in_band"] = sum(acc[name + "_in_band"]) / len(acc["n"])
            row[f"{name}_tail_ok"] = sum(acc[name + "_tail_ok"]) / len(acc["n"])
        rows.append(row)
    return rows


def _merge(a, b):
    return b if a is None else a if b is None else a.merge(b)


def compute_gaps(docs) -> list[tuple[str, int, float]]:
    """Per run document with kept records: (layout, calls, median decode gap between one call's
    completion and the rank's next issue) — the compute between calls that
    ``llmcomm calibrate --engine-conditions --compute-ms`` should match."""
    out = []
    for doc in docs:
        recs = sorted((r for r in doc.records or () if r.phase == "decode" and r.duration_s is not None),
                      key=lambda r: (r.rank, r.rep, r.start_ns))
        gaps = [(b.start_ns - a.start_ns) / 1e9 - a.duration_s for a, b in zip(recs, recs[1:])
                if a.rank == b.rank and a.rep == b.rep and a.step == b.step]
        if gaps:
            out.append((f"tp{doc.case.tp}-pp{doc.case.pp} b{doc.case.batch}", len(gaps), statistics.median(gaps)))
    return out


def format_transfer_rows(rows: list[dict]) -> str:
    from llmcomm_tests.core.text import text_table

    def pct(x):
        return "-" if x is None else f"{x:.0%}"

    body = [(r["op"], r["group_size"], r["role"] or "-", r["world_size"], r["cases"], r["n"],
             pct(r["before_median_err"]), pct(r["before_p90_err"]), pct(r["pooled_median_err"]),
             pct(r["pooled_p90_err"]), pct(r["pooled_in_band"]), pct(r["variant_median_err"]),
             pct(r["variant_p90_err"]), f"{r['variant_median_ratio']:.2f}", pct(r["variant_in_band"]),
             pct(r["variant_tail_ok"])) for r in rows]
    return text_table(("op", "t", "role", "W", "cases", "samples", "BEFORE med", "BEFORE p90", "pooled med",
                       "pooled p90", "pooled in band", "variant med", "variant p90", "centre/model", "in band",
                       "tail ok"), body, left=4)


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
    parser.add_argument("--before", default=None,
                        help="profile (name or YAML) the whole call was judged against before: adds BEFORE columns")
    parser.add_argument("--transfer-only", action="store_true", help="print only the transfer-centre table")
    args = parser.parse_args(argv)

    profile = load_profile(args.profile)
    before = load_profile(args.before) if args.before else None
    if args.load:
        docs = [from_json(RunDocument, json.loads(p.read_text())) for p in sorted(args.load.glob("*.json"))]
        what = f"{len(docs)} saved run documents from {args.load}"
    else:
        docs = run_all([x for x in args.layouts.split(",") if x.strip()], _workloads(args.workloads), args.repeats,
                       args.warmup, args.dtype, args.save)
        what = (f"tiny engine, layouts {args.layouts}, workloads {args.workloads} (batch:prompt:gen), "
                f"{args.dtype}, repeats {args.repeats}, warmup {args.warmup}")
    trows = transfer_rows(docs, profile, before)
    print(f"# analytic accuracy: {what}")
    print(f"# profile {profile.name} ({profile.source or profile.description}); host: {os.cpu_count()} cores")
    print("\n## transfer centre: |median transfer - model| / model over cases (judged class x run)"
          + (f"; BEFORE = whole call vs {before.name} ({args.before})" if before else ""))
    print(format_transfer_rows(trows))
    print("(BEFORE: whole call vs the old model; pooled: transfer vs the op's fit, what the check reads without a "
          "role; variant: transfer vs the fit's variant for the role and world size; in band / tail ok: the variant's)")
    for name in ("pooled", "variant"):
        misses = [r for r in trows if r[f"{name}_median_err"] > TRANSFER_GOAL]
        print(f"goal median |error| of the transfer centre <= {TRANSFER_GOAL:.0%} per op class ({name}): "
              + ("met" if not misses else "missed by " + ", ".join(
                  f"{r['op']}/{r['group_size']}{'/' + r['role'] if r['role'] else ''}/W{r['world_size']}"
                  for r in misses)))
    gaps = compute_gaps(docs)
    if gaps:
        print("engine's median decode compute gap between calls (same step): "
              + ", ".join(f"{name} {gap * 1e3:.2f} ms" for name, _, gap in gaps))
    if args.transfer_only:
        if args.json_path:
            with open(args.json_path, "w") as f:
                json.dump({"profile": profile.name, "what": what, "transfer_rows": trows}, f, indent=1)
        return 0
    print("\n## whole call duration against [lower, upper] (the issue-4 check)")
    rows = accuracy_rows(docs, profile, by_phase=args.by_phase)
    s = summary(rows)
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
            json.dump({"profile": profile.name, "what": what, "rows": rows, "transfer_rows": trows,
                       "summary": {k: v for k, v in s.items() if not k.endswith("misses")}}, f, indent=1)
    return 0


def _verdict(misses: list[dict]) -> str:
    return "met" if not misses else "missed by " + ", ".join(_name(r) for r in misses)


def _name(row: dict) -> str:
    return f"{row['op']}/{row['group_size']}{'/' + row['role'] if row['role'] else ''}" + \
        (f"/{row['phase']}" if row["phase"] != "all" else "")


if __name__ == "__main__":
    sys.exit(main())
