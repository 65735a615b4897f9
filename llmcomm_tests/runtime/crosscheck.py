"""An independent count of the same ops: torch.profiler with ``record_shapes``.

The backend's own profiler events (``gloo:all_reduce``, ``gloo:send``, … ; ``nccl:*`` on NCCL
builds) carry the real op and, with ``record_shapes``, its input dims.  They come from inside the
backend, not from our hooks, so their (op, numel) counts must equal the recorder's for the same
generate call.  The profiled pass is extra (rep = -1) and is not part of the run's statistics.
"""

from __future__ import annotations

from collections import Counter

from llmcomm_tests.core.contract import PROFILER_EVENTS

PROFILED_REP = -1


def _numel(dims) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


def event_op(event_name: str) -> str | None:
    """The op of a backend profiler event, or None: ``gloo:all_reduce`` → all_reduce; NCCL's p2p
    events carry their peers (``nccl:send 0->1``, ``nccl:recv 1<-0``), which are not part of the op."""
    prefix, _, name = event_name.partition(":")
    name = name.split(" ", 1)[0]
    if prefix not in ("gloo", "nccl") or name not in PROFILER_EVENTS:
        return None
    return PROFILER_EVENTS[name]


def profiler_counts(events) -> Counter:
    counts: Counter = Counter()
    for event in events:
        op = event_op(event.name)
        if op is None:
            continue
        shapes = [s for s in (event.input_shapes or []) if s]
        numel = sum(_numel(s) for s in shapes[:1])  # the first input is the payload
        counts[(op, numel)] += 1
    return counts


def profile_ops(engine, prompt, gen_len: int, recorder, rank: int) -> dict:
    """Run one more generate under the profiler with the recorder on; compare their counts."""
    from torch.profiler import ProfilerActivity, profile

    first = len(recorder.records)
    recorder.rep, recorder.active = PROFILED_REP, True
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        engine.generate(prompt, gen_len)
    recorder.active = False
    ours = Counter((rec.op, rec.numel) for rec in recorder.records[first:])
    del recorder.records[first:]  # keep the profiled pass out of the run's records
    theirs = profiler_counts(prof.events())
    as_rows = lambda c: sorted([op, numel, n] for (op, numel), n in c.items())  # noqa: E731
    return {"rank": rank, "recorder": as_rows(ours), "profiler": as_rows(theirs), "match": ours == theirs}
