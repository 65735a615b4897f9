"""Wait versus transfer from the communication kernels' own times (Kineto / Chrome traces).

On NCCL a host clock around a call sees the launch, and CUDA events on the caller's stream are on
no clock the ranks share.  The profiler's device activity is: what ``torch.profiler`` with
``ProfilerActivity.CUDA`` exports holds every kernel's start and end on a time base the processes
of one host share.  So the split is taken from the kernels:

* communication kernels: ``ncclDevKernel_AllReduce_Sum_bf16_RING_LL`` and kin (NCCL ≥ 2.19),
  ``ncclKernel_*`` (older), vLLM's custom all-reduce ``cross_device_reduce_1stage``/``_2stage``;
  on gloo the backend's own ``gloo:*`` events (the real op time, peers included) serve the same
  way, so the CPU suite can run this very path (docs/measurements.md#kernel-timing);
* the recorder stays the source of counts, bytes, groups and sites: on each rank the k-th call of
  an op family (send, recv, gather, scatter are one: NCCL runs them as SendRecv kernels) is the
  k-th kernel of that family in launch order.  A family whose counts differ is not timed, and the
  difference is reported (a failing row, not a skip);
* the split itself is ``arrival.split`` on the recorder's calls re-timed by their kernels: the same
  instance matching (k-th call on a channel) and the same rule (last arrival = latest kernel start).

Timestamps: ``ts``/``dur`` in µs, relative to the trace's ``baseTimeNanoseconds`` when it has one;
read as decimals, so a 16-digit µs stamp keeps its nanoseconds.  No torch here.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

import numpy as np

from llmcomm_tests.core.contract import PROFILER_EVENTS
from llmcomm_tests.core.documents import CallClass, RankOps
from llmcomm_tests.runtime import arrival

# NCCL runs send, recv and the ops it builds from them (gather, scatter, all_to_all) as one
# SendRecv kernel: for counting they are one family, on gloo too, so both sources are cut alike
P2P_FAMILY = "send_recv"
_P2P_OPS = ("send", "recv", "gather", "scatter", "all_to_all")
_NCCL_KERNEL = re.compile(r"nccl(?:Dev)?Kernel_([A-Za-z]+)")
_NCCL_OPS = {"AllReduce": "all_reduce", "AllGather": "all_gather", "ReduceScatter": "reduce_scatter",
             "Broadcast": "broadcast", "Reduce": "reduce", "AllToAll": P2P_FAMILY,
             "SendRecv": P2P_FAMILY, "Send": P2P_FAMILY, "Recv": P2P_FAMILY}
_CUSTOM_ALL_REDUCE = re.compile(r"cross_device_reduce_[12]stage")


@dataclass(frozen=True)
class CommKernel:
    """One communication kernel (or gloo op) on one rank."""

    family: str  # the recorder's op name, ``send_recv`` for point-to-point; "" when the name says no op
    name: str
    start_ns: int  # on the trace's clock: shared by the processes of one host
    end_ns: int
    order: int  # launch order on its rank (the CUPTI correlation id; the start for gloo events)


def family_of(op: str) -> str:
    """The kernel family a recorder op runs as."""
    return P2P_FAMILY if op in _P2P_OPS else op


def classify(event: dict) -> str | None:
    """The family of a trace event, "" for a NCCL kernel of no known op, None when it is no
    communication kernel (compute kernels, CPU ops, the ``nccl:*`` launch annotations)."""
    name, cat = event.get("name", ""), event.get("cat", "")
    if cat == "kernel":
        match = _NCCL_KERNEL.search(name)
        if match:
            return _NCCL_OPS.get(match.group(1), "")
        return "all_reduce" if _CUSTOM_ALL_REDUCE.search(name) else None
    prefix, _, rest = name.partition(":")
    if prefix == "gloo" and event.get("ph") == "X":
        op = PROFILER_EVENTS.get(rest.split(" ")[0])
        return family_of(op) if op else ""
    return None


def load_trace(path) -> dict:
    """A Kineto / Chrome trace (``.json`` or ``.json.gz``), numbers with a fraction as decimals."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as f:
        return json.load(f, parse_float=Decimal)


def comm_kernels(trace: dict) -> list[CommKernel]:
    """The communication kernels of one rank's trace, in launch order."""
    base = int(trace.get("baseTimeNanoseconds") or 0)
    out = []
    for event in trace.get("traceEvents", []):
        family = classify(event)
        if family is None or "ts" not in event:
            continue
        start = base + int(Decimal(event["ts"]) * 1000)
        end = start + int(Decimal(event.get("dur", 0)) * 1000)
        order = (event.get("args") or {}).get("correlation")
        out.append(CommKernel(family, event["name"], start, end, int(order) if order is not None else start))
    out.sort(key=lambda k: (k.order, k.start_ns))
    return out


def trace_rank(trace: dict, default: int) -> int:
    """The rank a trace says it was taken on (Kineto's ``distributedInfo``), else ``default``."""
    return int((trace.get("distributedInfo") or {}).get("rank", default))


# -- the recorder's calls re-timed by their kernels ------------------------------------------------


@dataclass
class KernelTiming:
    """What the kernels give a run: per rank the recorder's calls on the kernels' clock (NaN
    duration where no kernel could be assigned), their split, and every count that differed."""

    ops: list[RankOps]
    splits: list[tuple[np.ndarray, np.ndarray]]
    mismatches: list[str] = field(default_factory=list)
    timed_calls: int = 0


def align(ops: RankOps, kernels: list[CommKernel]) -> tuple[RankOps, list[str]]:
    """``ops`` with every call's start and duration taken from its kernel: the k-th call of a
    family (issue order) is its k-th kernel (launch order).  A family whose counts differ keeps no
    time, and is named in the mismatches."""
    n = len(ops)
    start = np.zeros(n, np.int64)
    duration = np.full(n, np.nan)
    matched = np.zeros(n, bool)
    families = np.array([family_of(c.op) for c in ops.classes] or [""], dtype=object)[ops.cls] if n else \
        np.empty(0, dtype=object)
    issue = np.argsort(ops.start_ns, kind="stable")
    by_family: dict[str, list[CommKernel]] = {}
    for k in kernels:
        by_family.setdefault(k.family, []).append(k)
    mismatches = []
    for family in sorted(set(families.tolist()) | set(by_family)):
        calls = issue[families[issue] == family]
        found = by_family.get(family, [])
        if len(calls) != len(found):
            label = family or "unknown communication kernel"
            mismatches.append(f"rank {ops.rank} {label}: {len(calls)} calls recorded, {len(found)} kernels")
            continue
        start[calls] = [k.start_ns for k in found]
        duration[calls] = [(k.end_ns - k.start_ns) / 1e9 for k in found]
        matched[calls] = True
    # arrival numbers a channel's calls by their start: a call without a kernel keeps its place in
    # issue order (the latest kernel start before it), so the calls around it still pair up
    in_issue = start[issue]
    in_issue[~matched[issue]] = np.iinfo(np.int64).min
    filled = np.maximum.accumulate(in_issue) if n else in_issue
    start[issue] = np.where(matched[issue], in_issue, np.maximum(filled, 0))
    # start and duration now share a clock: the device_timed caveat no longer applies
    return replace(ops, start_ns=start, duration_s=duration, device_timed=False), mismatches


def split(rank_ops: list[RankOps], kernels: list[list[CommKernel]]) -> KernelTiming:
    """Per rank, the wait and transfer of every call from the kernels of one host's ranks."""
    aligned, mismatches = [], []
    for ops, found in zip(rank_ops, kernels):
        timed, missing = align(ops, found)
        aligned.append(timed)
        mismatches += missing
    timed_calls = sum(int((~np.isnan(o.duration_s)).sum()) for o in aligned)
    return KernelTiming(aligned, arrival.split(aligned), mismatches, timed_calls)


# -- traces without a recorder (public traces, other tools' runs) ---------------------------------


def trace_ops(kernels_by_rank: dict[int, list[CommKernel]]) -> tuple[list[RankOps], list[str]]:
    """Calls made from kernels alone: every collective kernel is a call on the group of all the
    given ranks; SendRecv kernels pair up only between exactly two ranks (a kernel names no peer).
    Returns the calls and what could not be made a call, with the reason."""
    ranks = tuple(sorted(kernels_by_rank))
    skipped: dict[str, int] = {}
    out = []
    for rank in ranks:
        classes: list[CallClass] = []
        rows, starts, durations = [], [], []
        for k in kernels_by_rank[rank]:
            if not k.family or (k.family == P2P_FAMILY and len(ranks) != 2):
                why = ("a NCCL kernel of no known op" if not k.family else
                       f"SendRecv kernels name no peer: paired only between 2 ranks, {len(ranks)} given")
                skipped[why] = skipped.get(why, 0) + 1
                continue
            cc = CallClass(k.family, ranks, "", 0, 0, 0, "", k.name, None)
            if cc not in classes:
                classes.append(cc)
            rows.append(classes.index(cc))
            starts.append(k.start_ns)
            durations.append((k.end_ns - k.start_ns) / 1e9)
        zeros = np.zeros(len(rows), np.int32)
        out.append(RankOps(rank, classes, np.array(rows, np.int32), zeros, zeros,
                           np.array(starts, np.int64), np.array(durations, float)))
    if len(ranks) < 2:
        skipped[f"{len(ranks)} rank given: no peer to align with, nothing is split"] = \
            sum(len(k) for k in kernels_by_rank.values())
    return out, [f"{n} kernels: {why}" for why, n in sorted(skipped.items())]


def read_traces(paths) -> dict[int, list[CommKernel]]:
    """The communication kernels of one trace per rank (ranks from the traces, else file order)."""
    out = {}
    for i, path in enumerate(sorted(Path(p) for p in paths)):
        trace = load_trace(path)
        out[trace_rank(trace, i)] = comm_kernels(trace)
    return out
