"""``llmcomm bench-comm``: an nccl-tests-style size sweep over torch.distributed, printed as a table.

The sweeps are ``calibration.sweep`` (its docstring holds the method and the columns).
"""

from __future__ import annotations

import json
import sys

from llmcomm_tests.calibration.sweep import DEFAULT_SIZES, OPS, ORDERS, engine_sweep, sweep, table
from llmcomm_tests.core.arguments import byte_sizes, non_negative_int, output_file, positive_float, positive_int
from llmcomm_tests.core.text import text_table
from llmcomm_tests.runtime import launch


def add_arguments(parser) -> None:
    parser.add_argument("--world-size", type=positive_int, default=2)
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated: " + ", ".join(OPS))
    parser.add_argument("--sizes", type=byte_sizes, default=None,
                        help="comma-separated byte sizes, K/M suffixes allowed (default 1 KiB … 16 MiB, ×4)")
    parser.add_argument("--repeats", type=positive_int, default=20)
    parser.add_argument("--warmup", type=non_negative_int, default=3)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"])
    parser.add_argument("--timeout", type=positive_float, default=600.0)
    parser.add_argument("--json", dest="json_path", type=output_file, default=None,
                        help="write rows and the raw samples here")
    parser.add_argument("--compute-ms", type=float, default=None,
                        help="engine conditions: each rank computes this many ms before every call, no barrier "
                             "per call; rows gain transfer_s (completion - last arrival)")
    parser.add_argument("--compute-mb", type=float, default=0.0,
                        help="engine conditions: the compute reads this many MiB of weights each pass, as a "
                             "decode step does (default 0: a cache-resident matmul)")
    parser.add_argument("--order", default="burst", choices=ORDERS,
                        help="engine conditions: repeat each (op, size) back to back (burst, as the engine's layers "
                             "do) or visit every op and size in each repetition (interleaved)")
    parser.add_argument("--group-size", type=int, default=None,
                        help="engine conditions: split the world into groups of this size, each running the op "
                             "concurrently (default: the world)")


def main(args) -> int:
    sizes = args.sizes or DEFAULT_SIZES
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = sorted(set(ops) - set(OPS))
    if unknown or not ops:
        print(f"llmcomm bench-comm: --ops: unknown op(s) {', '.join(unknown) or '(none given)'}; known: "
              f"{', '.join(OPS)}", file=sys.stderr)
        return 2
    if "send_recv" in ops and args.world_size < 2:
        print("llmcomm bench-comm: send_recv needs --world-size >= 2", file=sys.stderr)
        return 2
    try:
        launch.resolve_backend(args.backend, args.world_size)  # nccl without a GPU per rank: refused up front
    except ValueError as exc:
        print(f"llmcomm bench-comm: {exc}", file=sys.stderr)
        return 2
    engine = args.compute_ms is not None or args.group_size is not None
    try:
        if engine:
            rows = engine_sweep(args.world_size, ops, sizes, args.repeats, group_size=args.group_size,
                                compute_ms=args.compute_ms or 0.0, warmup=args.warmup, dtype=args.dtype,
                                backend=args.backend, timeout_s=args.timeout, order=args.order,
                                compute_mb=args.compute_mb)
        else:
            rows = sweep(args.world_size, ops, sizes, args.repeats, args.backend, args.timeout, args.warmup,
                         args.dtype)
    except ValueError as exc:
        print(f"llmcomm bench-comm: {exc}", file=sys.stderr)
        return 2
    summary = table(rows)
    mode = (f"  engine conditions: group_size={args.group_size or args.world_size} compute_ms={args.compute_ms or 0:g}"
            f" compute_mb={args.compute_mb:g}"
            if engine else "  barrier before each call")
    print(f"# llmcomm bench-comm  world_size={args.world_size}  dtype={args.dtype}  repeats={args.repeats}{mode}")
    head = ("op", "size(B)", "min(us)", "median(us)", "max(us)", "algbw(GB/s)", "busbw(GB/s)")
    head += ("transfer p50(us)", "transfer p90(us)") if engine else ()
    print(text_table(head, [(r["op"], r["bytes"], f"{r['time_min_s'] * 1e6:.1f}", f"{r['time_median_s'] * 1e6:.1f}",
                             f"{r['time_max_s'] * 1e6:.1f}", f"{r['algbw_GBps']:.3f}", f"{r['busbw_GBps']:.3f}")
                            + ((f"{r['transfer_median_s'] * 1e6:.1f}", f"{r['transfer_p90_s'] * 1e6:.1f}")
                               if engine else ()) for r in summary], left=1))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"schema": "llmcomm.bench-comm/1", "world_size": args.world_size, "dtype": args.dtype,
                       "group_size": args.group_size or args.world_size if engine else None,
                       "compute_ms": args.compute_ms if engine else None,
                       "compute_mb": args.compute_mb if engine else None,
                       "summary": summary, "rows": rows}, f, indent=1)
    return 0
