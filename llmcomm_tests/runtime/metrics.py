"""The ranks' calls and token times → the run document's numbers.

* latency metrics: TTFT, TPOT, E2E per repetition and ITL per token gap (vLLM's benchmark
  definitions: TPOT = (E2E − TTFT) / (generated tokens − 1));
* volume rows: calls, bytes and wire bytes per (op, phase, site class), summed over ranks;
* op summaries: every call class with a bounded latency summary (documents.OpSummary);
* comm metrics: time inside communication calls per token and as a share of TTFT/TPOT/E2E;
* the timeline (one decode step's calls on every rank) and, on request, every call.

Works on the recorder's columns (``RankOps``) with numpy: a Llama-3.1-8B 8x1 case's ~660 000
calls are summarised without a Python object per call.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from llmcomm_tests.analytic.accuracy import role_of, span_of, waiting_reason
from llmcomm_tests.core.contract import site_class
from llmcomm_tests.core.documents import (CommMetrics, Distribution, LatencyMetrics, LatencySummary, OpRecord, OpSummary, RankOps, VolumeRow)
from llmcomm_tests.core.stats import percentile


def latency_metrics(generations: list[dict], gen_len: int, batch: int) -> LatencyMetrics:
    ttft, tpot, e2e, itl = [], [], [], []
    for gen in generations:
        times = gen["token_times_s"]
        ttft.append(times[0])
        e2e.append(times[-1])
        tpot.append((times[-1] - times[0]) / (gen_len - 1) if gen_len > 1 else 0.0)
        itl.extend(b - a for a, b in zip(times, times[1:]))
    p50_e2e = percentile(e2e, 50)
    return LatencyMetrics(Distribution(ttft), Distribution(tpot), Distribution(e2e), Distribution(itl),
                          batch * gen_len / p50_e2e if p50_e2e else None)


def volume(rank_ops: list[RankOps], rep: int = 0) -> list[VolumeRow]:
    """Rows per (op, phase, site class): calls, bytes, wire bytes over every rank, one repetition."""
    rows: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for ops in rank_ops:
        counts = np.bincount(ops.cls[ops.rep == rep], minlength=len(ops.classes))
        for c, n in zip(ops.classes, counts):
            if n:
                row = rows[(c.op, c.phase, site_class(c.site))]
                row[0] += int(n)
                row[1] += int(n) * c.bytes
                row[2] += int(n) * c.wire_bytes
    return [VolumeRow(*k, *v) for k, v in sorted(rows.items())]


def volume_stable(rank_ops: list[RankOps], repeats: int) -> bool:
    """Every repetition moved the same calls and bytes (a deterministic engine must)."""
    first = volume(rank_ops, 0)
    return all(volume(rank_ops, rep) == first for rep in range(1, repeats))


def op_summaries(rank_ops: list[RankOps], splits=None, seed: int = 0) -> list[OpSummary]:
    """One summary per (op, phase, site class, span, bytes per call, role), over ranks and
    repetitions; ``splits`` (``arrival.split``) adds the wait and transfer of every call."""
    calls: dict[tuple, list] = {}  # key -> [count, wire bytes, durations, waits, transfers]
    for r, ops in enumerate(rank_ops):
        order = np.argsort(ops.cls, kind="stable")
        bounds = np.searchsorted(ops.cls[order], np.arange(len(ops.classes) + 1))
        for index, c in enumerate(ops.classes):
            chosen = order[bounds[index]:bounds[index + 1]]
            if not len(chosen):
                continue
            role = role_of(c.op, c.bytes, c.wire_bytes)
            key = (c.op, c.phase, site_class(c.site), tuple(span_of(c.op, ops.rank, c.group, c.peer)), c.bytes, role)
            acc = calls.setdefault(key, [0, 0, [], [], []])
            acc[0] += len(chosen)
            acc[1] += len(chosen) * c.wire_bytes
            acc[2].append(ops.duration_s[chosen])
            if splits is not None:
                acc[3].append(splits[r][0][chosen])
                acc[4].append(splits[r][1][chosen])
    out = []
    for (op, phase, site, span, nbytes, role), (count, wire, durations, waits, transfers) in sorted(calls.items()):
        out.append(OpSummary(op, phase, site, list(span), nbytes, role, waiting_reason(op, role), count,
                             count * nbytes, wire, _summary(durations, seed), _summary(waits, seed),
                             _summary(transfers, seed)))
    return out


def _summary(parts: list, seed: int) -> LatencySummary | None:
    """The summary of the timed values (NaN: not timed) of ``parts``, or None when none is."""
    if not parts:
        return None
    values = np.concatenate(parts)
    values = values[~np.isnan(values)]
    return LatencySummary.of(values, seed) if len(values) else None


def busy_time(start_ns, end_ns) -> float:
    """Seconds covered by the union of [start, end) intervals: overlapping calls (async p2p, a call
    issued while another is in flight) count once."""
    if not len(start_ns):
        return 0.0
    order = np.argsort(start_ns, kind="stable")
    starts, ends = start_ns[order], end_ns[order]
    reach = np.maximum.accumulate(ends)
    # a new busy stretch starts where a call begins after everything before it has ended
    new = np.empty(len(starts), bool)
    new[0] = True
    new[1:] = starts[1:] > reach[:-1]
    stretch_starts = starts[new]
    stretch_ends = np.append(reach[np.flatnonzero(new)[1:] - 1], reach[-1])
    return float((stretch_ends - stretch_starts).sum()) / 1e9


def comm_metrics(rank_ops: list[RankOps], generations: list[dict], batch: int, gen_len: int,
                 splits=None) -> CommMetrics:
    """Time inside comm calls (peers' lateness included: what a rank waited), per token and as a
    share of TTFT/TPOT/E2E, wire bytes per generated token, and — with ``splits`` — the time spent
    waiting for late peers per token (no sample for a repetition holding a call without a split).
    Per repetition the slowest rank."""
    phase_of = [_phases(ops) for ops in rank_ops]
    per_token, ttft_share, tpot_share, e2e_share, wait_per_token = [], [], [], [], []
    unsplit_reps = 0
    for rep, gen in enumerate(generations):
        prefill = decode = total = wait = 0.0
        for r, (ops, phases) in enumerate(zip(rank_ops, phase_of)):
            timed = (ops.rep == rep) & ~np.isnan(ops.duration_s)
            busy = _busy_sum if ops.device_timed else _busy_union
            is_prefill, is_decode = phases[timed] == "prefill", phases[timed] == "decode"
            prefill = max(prefill, busy(ops, timed, is_prefill))
            decode = max(decode, busy(ops, timed, is_decode))
            total = max(total, busy(ops, timed, is_prefill | is_decode))
            if splits is not None:
                waits = splits[r][0][ops.rep == rep]
                # a call without a split would count as no wait: the repetition has no sample
                wait = math.nan if np.isnan(waits).any() else max(wait, float(waits.sum()))
        times = gen["token_times_s"]
        per_token.append(total / gen_len)
        if wait == wait:
            wait_per_token.append(wait / gen_len)
        else:
            unsplit_reps += 1
        e2e_share.append(total / times[-1] if times[-1] else 0.0)
        ttft_share.append(prefill / times[0] if times[0] else 0.0)
        if gen_len > 1 and times[-1] > times[0]:
            tpot_share.append(decode / (times[-1] - times[0]))
    wire = sum(int(ops.classes[c].wire_bytes) * int(n) for ops in rank_ops
               for c, n in enumerate(np.bincount(ops.cls[ops.rep == 0], minlength=len(ops.classes))))
    missing = (f"{unsplit_reps} of {len(generations)} repetitions hold calls without a wait/transfer split"
               if splits is not None and unsplit_reps else None)
    return CommMetrics(Distribution(per_token), Distribution(e2e_share), Distribution(ttft_share),
                       Distribution(tpot_share), wire / (batch * gen_len), wire,
                       Distribution(wait_per_token if splits is not None else []), missing)


def _busy_union(ops: RankOps, timed, chosen) -> float:
    """Start and duration on one clock: the union of the calls' intervals."""
    start = ops.start_ns[timed][chosen]
    return busy_time(start, start + (ops.duration_s[timed][chosen] * 1e9).astype(np.int64))


def _busy_sum(ops: RankOps, timed, chosen) -> float:
    """Durations on the device, starts on the host: no interval exists to unite, so the sum (calls
    overlapping on the device would count twice; the engine's calls are sequential per rank)."""
    return float(ops.duration_s[timed][chosen].sum())


def records(rank_ops: list[RankOps], where=None, splits=None) -> list[OpRecord]:
    """Calls as records, in issue order per rank; ``where(ops)`` picks rows (a boolean mask);
    ``splits`` (``arrival.split``) adds each call's wait and transfer."""
    out = []
    for r, ops in enumerate(rank_ops):
        rows = np.flatnonzero(where(ops)) if where is not None else range(len(ops))
        for i in rows:
            c = ops.classes[ops.cls[i]]
            timing = [float(ops.duration_s[i])] + ([float(splits[r][0][i]), float(splits[r][1][i])]
                                                   if splits is not None else [math.nan, math.nan])
            d, w, x = (None if v != v else v for v in timing)
            out.append(OpRecord(ops.rank, int(ops.rep[i]), c.op, list(c.group), c.dtype, c.numel, c.bytes,
                                c.wire_bytes, c.phase, int(ops.step[i]), c.site, int(ops.start_ns[i]), d, c.peer, w, x))
    return out


def timeline(rank_ops: list[RankOps], splits=None) -> list[OpRecord]:
    """Every rank's calls in the middle decode step of the first repetition (what the report's
    timeline draws): a few dozen records however long the run."""
    steps = sorted({int(s) for ops in rank_ops for s in np.unique(ops.step[(ops.rep == 0) & (_phases(ops) == "decode")])})
    if not steps:
        return []
    step = steps[len(steps) // 2]
    return records(rank_ops, lambda ops: (ops.rep == 0) & (ops.step == step) & (_phases(ops) == "decode"), splits)


def _phases(ops: RankOps):
    return np.array([c.phase for c in ops.classes] or [""])[ops.cls]
