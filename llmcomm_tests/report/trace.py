"""A case's calls as a Chrome trace (the Trace Event Format; opens in Perfetto and chrome://tracing).

One process per case, one track (thread) per rank; each call a complete event ("X") named after
its op, with the wait for the last peer and the transfer after it as nested slices; args carry
bytes, wire bytes, site, phase, step, repetition and group.  Times are microseconds from the
case's first call, on the clock the ranks share (one host: the monotonic clock).
"""

from __future__ import annotations

import json
from pathlib import Path

from llmcomm_tests.core.documents import RunDocument
from llmcomm_tests.core.private_files import write_text_atomically


def chrome_trace(doc: RunDocument, title: str = "") -> dict:
    records = doc.records or []
    events: list[dict] = [{"name": "process_name", "ph": "M", "pid": 0, "tid": 0,
                           "args": {"name": title or f"tp{doc.case.tp}-pp{doc.case.pp}"}}]
    for rank in range(doc.case.world_size):
        events.append({"name": "thread_name", "ph": "M", "pid": 0, "tid": rank, "args": {"name": f"rank {rank}"}})
    if not records:
        return {"traceEvents": events, "displayTimeUnit": "ms"}
    t0 = min(r.start_ns for r in records)
    for r in records:
        ts = (r.start_ns - t0) / 1e3
        args = {"bytes": r.bytes, "wire_bytes": r.wire_bytes, "site": r.site, "phase": r.phase, "step": r.step,
                "rep": r.rep, "group": r.group, "peer": r.peer, "dtype": r.dtype}
        dur = (r.duration_s or 0.0) * 1e6
        events.append({"name": r.op, "cat": r.phase, "ph": "X", "pid": 0, "tid": r.rank, "ts": ts, "dur": dur,
                       "args": args})
        if r.wait_s is not None and r.transfer_s is not None:
            wait = min(r.wait_s * 1e6, dur)
            events.append({"name": "wait", "cat": "wait", "ph": "X", "pid": 0, "tid": r.rank, "ts": ts, "dur": wait})
            events.append({"name": "transfer", "cat": "transfer", "ph": "X", "pid": 0, "tid": r.rank,
                           "ts": ts + wait, "dur": max(dur - wait, 0.0)})
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_trace(doc: RunDocument, path: "str | Path", title: str = "") -> Path:
    """Write the trace atomically (a viewer never opens half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomically(path, json.dumps(chrome_trace(doc, title)))
