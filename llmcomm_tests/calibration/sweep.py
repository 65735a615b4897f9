"""nccl-tests-style size sweeps over torch.distributed (``llmcomm bench-comm``, ``llmcomm calibrate``).

For each op and message size: time per call (min / median / max over repetitions, max over ranks of
each repetition, as nccl-tests reports the slowest rank), algbw = size / time and busbw = algbw ×
the op's bus factor (nccl-tests' doc/PERFORMANCE.md, ``contract.bus_factor``): all_reduce 2(n−1)/n;
all_gather, reduce_scatter, gather (n−1)/n; broadcast, send_recv 1.  Size is nccl-tests' "size": the
all-reduce buffer, the gathered output, the reduce-scatter input, the broadcast buffer, the p2p
message.  Gather-type ops round it down to a multiple of world_size elements (at least one per rank);
the others take it as asked, so 8 B is an 8-byte message (the engine's int64 token transfers).  Each
row also keeps every rank's own samples (``rank_times_s``) next to the slowest rank's (``times_s``).

Engine conditions (``--compute-ms X``, ``engine_sweep``).  The barrier-aligned sweep times an op
whose ranks arrive together on an idle host; the engine does neither.  In this mode each rank spins
real compute (a small matmul loop) for X ms of wall time before every call and issues the call as
soon as its own compute is done — no barrier per call, so the ranks drift apart as they do between
the engine's layers.  ``--group-size G`` splits the world into W/G groups that run the op
concurrently, each on its own group (TP2×PP2's two TP groups on 4 ranks), so the same number of
ranks share the cores as in the engine.  ``--order burst`` (default) repeats each (op, size) back to
back, as the engine's layers repeat one call (prefill's burst of 256 KiB all-reduces, decode's burst
of 1 KiB ones); ``interleaved`` visits every op and size in each repetition, so load drift lands on
all sizes alike — but it made the 256 KiB all-reduce slower than the engine's
(docs/calibration.md).  Every call's issue and completion are read on the host's monotonic clock
(``perf_counter_ns``, shared by all processes on one host); per call instance (group, repetition)
the *transfer* of each participating rank is its completion − the last participant's issue (clipped
at 0), as ``runtime/arrival.py`` splits the engine's records.  Rows gain ``group_size``,
``compute_ms``, ``transfer_s`` with a parallel ``transfer_role`` (``root`` / ``peer`` for gather and
broadcast, ``send`` / ``recv`` for send_recv, ``""`` otherwise) and the raw ``calls`` (per rank:
[issue_ns], [completion_ns]).

``--compute-mb M`` makes that compute read M MiB of weights (a matrix-vector product, as a decode
step reads its layers' weights) instead of a cache-resident 64×64 matmul.  The call that follows
then finds the caches cold, as the engine's do (docs/calibration.md, "Point-to-point with cold
caches").
"""

from __future__ import annotations

import os
import statistics
import time

from llmcomm_tests.core.contract import LATENCY_OPS, bus_factor
from llmcomm_tests.core.stats import percentile
from llmcomm_tests.engine.parallel import TORCH_DTYPES
from llmcomm_tests.runtime import launch

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
    per_rank = launch.launch(rank_sweep, (list(ops), list(sizes), repeats, warmup, dtype), world_size=world_size,
                             backend=backend, timeout_s=timeout_s)
    return rows_from(per_rank, world_size, repeats)


def rows_from(per_rank: list[dict], world_size: int, repeats: int) -> list[dict]:
    """Every rank's ``rank_sweep`` result → sweep rows (also used by the multi-node calibration)."""
    rows = []
    for i, (op, size) in enumerate(per_rank[0]["keys"]):
        times = [max(r["times"][i][k] for r in per_rank) for k in range(repeats)]
        rows.append({"op": op, "world_size": world_size, "bytes": size, "times_s": times,
                     "rank_times_s": [list(r["times"][i]) for r in per_rank]})
    return rows


def rank_sweep(ctx, ops, sizes, repeats, warmup, dtype):
    import torch
    import torch.distributed as dist


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


ROLE_OPS = ("gather", "broadcast")  # rooted: the root (the group's first rank) and its peers differ


def engine_sweep(world_size: int, ops: list[str], sizes: list[int], repeats: int = 40, *, group_size: int | None = None,
                 compute_ms: float = 0.3, warmup: int = 3, dtype: str = "fp32", backend: str = "auto",
                 timeout_s: float = 600.0, launch_id: int = 0, order: str = "burst",
                 compute_mb: float = 0.0) -> list[dict]:
    """One launch of the engine-conditions sweep (module docstring): rows ``{"op", "world_size",
    "group_size", "bytes", "compute_ms", "launch", "times_s", "rank_times_s", "transfer_s",
    "transfer_role", "calls"}``; ``times_s`` holds, per (group, repetition), the slowest member's
    call time and ``transfer_s`` one sample per participating rank and repetition."""
    group_size = group_size or world_size
    unknown = set(ops) - set(OPS)
    if unknown:
        raise ValueError(f"unknown op(s) {sorted(unknown)}; known: {', '.join(OPS)}")
    if group_size < 2 or world_size % group_size:
        raise ValueError(f"--group-size {group_size} must be >= 2 and divide the world size {world_size}")
    if compute_ms < 0:
        raise ValueError("--compute-ms must be >= 0")
    if compute_mb < 0:
        raise ValueError("--compute-mb must be >= 0")
    if order not in ORDERS:
        raise ValueError(f"--order must be one of {', '.join(ORDERS)}")
    per_rank = launch.launch(_rank_engine_sweep, (list(ops), list(sizes), repeats, warmup, dtype, group_size,
                                                  compute_ms, order, compute_mb), world_size=world_size, backend=backend,
                             timeout_s=timeout_s)
    groups = [list(range(g, g + group_size)) for g in range(0, world_size, group_size)]
    rows = []
    for i, (op, size) in enumerate(per_rank[0]["keys"]):
        times, transfers, roles = [], [], []
        for group in groups:
            members = _participants(op, group)
            for k in range(repeats):
                issue = {r: per_rank[r]["issue_ns"][i][k] for r in members}
                done = {r: per_rank[r]["done_ns"][i][k] for r in members}
                last = max(issue.values())
                times.append(max(done[r] - issue[r] for r in members) / 1e9)
                for r in members:
                    transfers.append(max(done[r] - last, 0) / 1e9)
                    roles.append(_role(op, r, group))
        rows.append({"op": op, "world_size": world_size, "group_size": group_size, "bytes": size,
                     "compute_ms": compute_ms, "compute_mb": compute_mb, "launch": launch_id, "cores": os.cpu_count(), "order": order, "times_s": times,
                     "rank_times_s": [[(d - s) / 1e9 for s, d in zip(r["issue_ns"][i], r["done_ns"][i])]
                                      for r in per_rank],
                     "transfer_s": transfers, "transfer_role": roles,
                     "calls": [[r["issue_ns"][i], r["done_ns"][i]] for r in per_rank]})
    return rows


def _participants(op: str, group: list[int]) -> list[int]:
    """The ranks of ``group`` that take part in ``op``: a send_recv is its first two ranks (one way,
    first → second), every other op the whole group."""
    return group[:2] if op == "send_recv" else group


def _role(op: str, rank: int, group: list[int]) -> str:
    if op == "send_recv":
        return "send" if rank == group[0] else "recv"
    if op in ROLE_OPS:
        return "root" if rank == group[0] else "peer"
    return ""


ORDERS = ("burst", "interleaved")


def compute_between_calls(compute_ms: float, compute_mb: float = 0.0, device="cpu"):
    """A callable that does real work for ``compute_ms`` of wall time, as a layer's compute would:
    x (1 x 256) @ W (256 x k), reading all of W's ``compute_mb`` MiB each pass, or with
    ``compute_mb`` 0 a cache-resident 64 x 64 matmul."""
    import torch

    if compute_mb:
        a = torch.randn(1, 256, device=device)
        w = torch.randn(256, max(1, int(compute_mb * 1024)), device=device)
    else:
        a = w = torch.randn(64, 64, device=device)
    out = torch.empty(a.shape[0], w.shape[1], device=device)
    spin_ns = int(compute_ms * 1e6)

    def compute():
        end = time.perf_counter_ns() + spin_ns
        while time.perf_counter_ns() < end:
            torch.mm(a, w, out=out)

    return compute


def _rank_engine_sweep(ctx, ops, sizes, repeats, warmup, dtype, group_size, compute_ms, order="burst", compute_mb=0.0):
    import torch
    import torch.distributed as dist


    torch_dtype = TORCH_DTYPES[dtype]
    elem = torch.empty((), dtype=torch_dtype).element_size()
    n, rank, world = group_size, ctx.rank, ctx.world_size
    groups = [list(range(g, g + n)) for g in range(0, world, n)]
    handles = [dist.new_group(g) if n < world else None for g in groups]  # every rank creates every group
    mine = rank // n
    group, pg = groups[mine], handles[mine]
    root, first, second = group[0], group[0], group[1]
    sync = torch.cuda.synchronize if ctx.backend == "nccl" else (lambda: None)
    compute = compute_between_calls(compute_ms, compute_mb, ctx.device)

    calls, keys = [], []
    for op in ops:
        for size in sizes:
            if op in GATHER_TYPE:  # the per-rank part must divide evenly: a multiple of n elements
                numel = max(n, size // elem // n * n)
            else:
                numel = max(1, size // elem)
            buf = torch.ones(numel, dtype=torch_dtype, device=ctx.device)
            part = torch.ones(numel // n, dtype=torch_dtype, device=ctx.device)
            gathered = [torch.empty_like(part) for _ in range(n)] if rank == root else None

            def call(op=op, buf=buf, part=part, gathered=gathered):
                if op == "all_reduce":
                    dist.all_reduce(buf, group=pg)
                elif op == "all_gather":
                    dist.all_gather_into_tensor(buf, part, group=pg)
                elif op == "reduce_scatter":
                    dist.reduce_scatter_tensor(part, buf, group=pg)
                elif op == "broadcast":
                    dist.broadcast(buf, root, group=pg)
                elif op == "gather":
                    dist.gather(part, gathered, dst=root, group=pg)
                elif op == "send_recv":  # one way, the group's first rank → its second; the rest idle
                    if rank == first:
                        dist.send(buf, second, group=pg)
                    elif rank == second:
                        dist.recv(buf, first, group=pg)

            keys.append((op, numel * elem))
            calls.append(call)
    for call in calls:  # connections up, buffers touched
        for _ in range(warmup):
            call()
    sync()
    dist.barrier()  # once, before the timed calls: from here on every rank runs at its own pace
    issue = [[0] * repeats for _ in calls]
    done = [[0] * repeats for _ in calls]
    clock = time.perf_counter_ns
    if order == "burst":  # each (op, size) repeated back to back, as the engine's layers repeat one call
        sequence = [(i, k) for i in range(len(calls)) for k in range(repeats)]
    else:  # every repetition visits every op and size: load drift lands on all sizes alike
        sequence = [(i, k) for k in range(repeats) for i in range(len(calls))]
    # A pipeline stage receiving a boundary has nothing to compute before it: it waits, blocked
    # (this engine runs one micro-batch, so stages take turns).  Its recv is posted idle and the
    # transfer includes waking it; computing first, as every collective's member does, would post
    # it late and hide that.
    waits = {i for i, (op, _) in enumerate(keys) if op == "send_recv"} if rank == second else set()
    for i, k in sequence:
        if i not in waits:
            compute()
        t0 = clock()
        calls[i]()
        sync()
        issue[i][k], done[i][k] = t0, clock()
    return {"keys": keys, "issue_ns": issue, "done_ns": done}


def table(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        ts = row["times_s"]
        med = statistics.median(ts)
        group = row.get("group_size", row["world_size"])
        algbw = row["bytes"] / med if med > 0 else 0.0
        entry = {"op": row["op"], "world_size": row["world_size"], "bytes": row["bytes"],
                 "time_min_s": min(ts), "time_median_s": med, "time_max_s": max(ts), "n": len(ts),
                 "algbw_GBps": algbw / 1e9, "busbw_GBps": algbw * bus_factor(row["op"], group) / 1e9}
        if "transfer_s" in row:
            entry.update(group_size=group, transfer_median_s=statistics.median(row["transfer_s"]),
                         transfer_p90_s=percentile(row["transfer_s"], 90))
        out.append(entry)
    return out
