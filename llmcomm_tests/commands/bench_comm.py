"""``llmcomm bench-comm``: an nccl-tests-style size sweep over torch.distributed.

For each op and message size: time per call (min / median / max over repetitions, max over ranks of
each repetition, as nccl-tests reports the slowest rank), algbw = size / time and busbw = algbw ×
the op's bus factor (nccl-tests' PERFORMANCE.md, ``contract.bus_factor``): all_reduce 2(n−1)/n; all_gather,
reduce_scatter, gather (n−1)/n; broadcast, send_recv 1.  Size is nccl-tests' "size": the all-reduce buffer, the
gathered output, the reduce-scatter input, the broadcast buffer, the p2p message.  Gather-type ops
round it down to a multiple of world_size elements (at least one per rank); the others take it as
asked, so 8 B is an 8-byte message (the engine's int64 token transfers).  Each row also keeps every
rank's own samples (``rank_times_s``) next to the slowest rank's (``times_s``).
"""

from __future__ import annotations

import json
import statistics
import sys

from .. import launch
from ..contract import LATENCY_OPS, bus_factor
from ..text import text_table
from .args import byte_sizes, non_negative_int, output_file, positive_float, positive_int

OPS = LATENCY_OPS
DEFAULT_SIZES = [2 ** k for k in range(10, 25, 2)]  # 1 KiB … 16 MiB
GATHER_TYPE = ("all_gather", "reduce_scatter", "gather")  # size = n × the per-rank part


def sweep(world_size: int, ops: list[str], sizes: list[int], repeats: int = 20, backend: str = "auto",
          timeout_s: float = 300.0, warmup: int = 3, dtype: str = "fp32") -> list[dict]:
    """Rows ``{"op", "world_size", "bytes", "times_s": [per repetition, slowest rank],
    "rank_times_s": [[per repetition] per rank]}`` — ``times_s`` is nccl-tests' view (the slowest
    rank), ``rank_times_s`` the recorder's (each rank's own call duration, what a run document's
    ``duration_s`` holds)."""
    unknown = set(ops) - set(OPS)
    if unknown:
        raise ValueError(f"unknown op(s) {sorted(unknown)}; known: {', '.join(OPS)}")
    per_rank = launch.launch(_rank_sweep, (list(ops), list(sizes), repeats, warmup, dtype), world_size=world_size,
                             backend=backend, timeout_s=timeout_s)
    return rows_from(per_rank, world_size, repeats)


def rows_from(per_rank: list[dict], world_size: int, repeats: int) -> list[dict]:
    """Every rank's ``_rank_sweep`` result → sweep rows (also used by the multi-node calibration)."""
    rows = []
    for i, (op, size) in enumerate(per_rank[0]["keys"]):
        times = [max(r["times"][i][k] for r in per_rank) for k in range(repeats)]
        rows.append({"op": op, "world_size": world_size, "bytes": size, "times_s": times,
                     "rank_times_s": [list(r["times"][i]) for r in per_rank]})
    return rows


def _rank_sweep(ctx, ops, sizes, repeats, warmup, dtype):
    import time

    import torch
    import torch.distributed as dist

    from ..engine.parallel import TORCH_DTYPES

    torch_dtype = TORCH_DTYPES[dtype]
    elem = torch.empty((), dtype=torch_dtype).element_size()
    n, rank = ctx.world_size, ctx.rank
    sync = torch.cuda.synchronize if ctx.backend == "nccl" else (lambda: None)
    keys, times = [], []
    for op in ops:
        for size in sizes:
            if op in GATHER_TYPE:  # the per-rank part must divide evenly: a multiple of n elements
                numel = max(n, size // elem // n * n)
            else:  # all_reduce, broadcast, send_recv: the size as asked (8 B = an int64 token id)
                numel = max(1, size // elem)
            buf = torch.ones(numel, dtype=torch_dtype, device=ctx.device)
            part = torch.ones(numel // n, dtype=torch_dtype, device=ctx.device)
            gathered = [torch.empty_like(part) for _ in range(n)] if rank == 0 else None

            def call():
                if op == "all_reduce":
                    dist.all_reduce(buf)
                elif op == "all_gather":
                    dist.all_gather_into_tensor(buf, part)
                elif op == "reduce_scatter":
                    dist.reduce_scatter_tensor(part, buf)
                elif op == "broadcast":
                    dist.broadcast(buf, 0)
                elif op == "gather":
                    dist.gather(part, gathered, dst=0)
                elif op == "send_recv":  # one way, rank 0 → rank 1; other ranks idle
                    if rank == 0:
                        dist.send(buf, 1)
                    elif rank == 1:
                        dist.recv(buf, 0)

            for _ in range(warmup):
                call()
            sync()
            samples = []
            for _ in range(repeats):
                dist.barrier()
                sync()
                t0 = time.perf_counter()
                call()
                sync()
                samples.append(time.perf_counter() - t0)
            keys.append((op, numel * elem))
            times.append(samples)
    return {"keys": keys, "times": times}


def table(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        ts = row["times_s"]
        med = statistics.median(ts)
        algbw = row["bytes"] / med if med > 0 else 0.0
        out.append({"op": row["op"], "world_size": row["world_size"], "bytes": row["bytes"],
                    "time_min_s": min(ts), "time_median_s": med, "time_max_s": max(ts), "n": len(ts),
                    "algbw_GBps": algbw / 1e9, "busbw_GBps": algbw * bus_factor(row["op"], row["world_size"]) / 1e9})
    return out


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
        launch.resolve_backend(args.backend, args.world_size)  # nccl without a GPU per rank: refused now
    except ValueError as exc:
        print(f"llmcomm bench-comm: {exc}", file=sys.stderr)
        return 2
    rows = sweep(args.world_size, ops, sizes, args.repeats, args.backend, args.timeout, args.warmup, args.dtype)
    summary = table(rows)
    print(f"# llmcomm bench-comm  world_size={args.world_size}  dtype={args.dtype}  repeats={args.repeats}")
    print(text_table(("op", "size(B)", "min(us)", "median(us)", "max(us)", "algbw(GB/s)", "busbw(GB/s)"),
                     [(r["op"], r["bytes"], f"{r['time_min_s'] * 1e6:.1f}", f"{r['time_median_s'] * 1e6:.1f}",
                       f"{r['time_max_s'] * 1e6:.1f}", f"{r['algbw_GBps']:.3f}", f"{r['busbw_GBps']:.3f}")
                      for r in summary], left=1))
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"schema": "llmcomm.bench-comm/1", "world_size": args.world_size, "dtype": args.dtype,
                       "summary": summary, "rows": rows}, f, indent=1)
    return 0
