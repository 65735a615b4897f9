"""Per-call records as plain dicts (what the vLLM plugin writes, one JSON line per call) →
:class:`~llmcomm_tests.core.documents.RankOps`, the columnar form the recorder hands the launcher.

The vLLM plugin cannot use our recorder (its collectives bypass ``torch.distributed``), so it
writes plain records; this turns them into the same class table + columns, so metrics, volume
rows and reports treat them like our engine's.
"""

from __future__ import annotations

from llmcomm_tests.core.documents import CallClass, RankOps


def to_rank_ops(rank: int, records: list[dict]) -> RankOps:
    import numpy as np

    mine = [r for r in records if r["rank"] == rank]
    classes: dict[CallClass, int] = {}
    n = len(mine)
    cls, rep, step = (np.empty(n, np.int32) for _ in range(3))
    start_ns = np.empty(n, np.int64)
    duration_s = np.full(n, np.nan)
    for i, r in enumerate(mine):
        key = CallClass(r["op"], tuple(r["group"]), r["dtype"], r["numel"], r["bytes"], r["wire_bytes"], r["phase"],
                        r["site"], r.get("peer"))
        cls[i] = classes.setdefault(key, len(classes))
        rep[i], step[i], start_ns[i] = r["rep"], r["step"], r["start_ns"]
        if r.get("duration_s") is not None:
            duration_s[i] = r["duration_s"]
    return RankOps(rank, list(classes), cls, rep, step, start_ns, duration_s)
