"""Volume per link tier: which ops cross the node boundary, predicted and measured, call by call.

A rank's node is ``rank // ranks_per_node`` (ranks r·R … r·R+R−1 share a node, as torchrun assigns
them).  An op is on the *inter* tier when its ranks span nodes, else *intra*:

* a collective: its process group spans nodes (a ring waits for its slowest link, latency.tier_of);
* a send / recv: the rank and its peer sit on different nodes.

The prediction classifies the analytic model's calls (volume.forward_kinds) the same way, so both
sides are keyed ``(tier, op, phase, site class)`` and compare exactly — a layout that puts TP
inside a node and PP across it must show all its all-reduces intra and only the boundary slices and
token transfers inter.  No torch here: recorded calls are documents.OpRecord (or their JSON).
"""

from __future__ import annotations

from collections import defaultdict

from llmcomm_tests.analytic import volume
from llmcomm_tests.analytic.latency import tier_of
from llmcomm_tests.engine.config import EngineShape
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.core.contract import site_class

KEYS = ("tier", "op", "phase", "site")


def _field(op, name: str):
    """Records are documents.OpRecord, or their JSON (a run document read back from the results folder)."""
    return op[name] if isinstance(op, dict) else getattr(op, name)


def recorded_tier(op, ranks_per_node: int) -> str:
    """Tier of one recorded call (a run document's ``records`` entry; ``peer`` is a global rank)."""
    if _field(op, "op") in ("send", "recv"):
        peer = _field(op, "peer")
        if peer is None:
            raise ValueError(f"recorded {_field(op, 'op')} on rank {_field(op, 'rank')} has no peer to place it")
        return tier_of((_field(op, "rank"), peer), ranks_per_node)
    return tier_of(_field(op, "group"), ranks_per_node)


def _rows(table: dict) -> list[dict]:
    return [dict(zip(KEYS, k), count=v[0], bytes=v[1], wire_bytes=v[2]) for k, v in sorted(table.items())]


def measured(records: list, ranks_per_node: int, rep: int = 0) -> list[dict]:
    """Rows ``{tier, op, phase, site, count, bytes, wire_bytes}`` of one repetition, summed over ranks,
    from a run document's ``records`` (runs with ``keep_records``)."""
    if records is None:
        raise ValueError("the run document has no records: run with keep_records (--keep-records)")
    table: dict = defaultdict(lambda: [0, 0, 0])
    for op in records:
        if _field(op, "rep") != rep:
            continue
        key = (recorded_tier(op, ranks_per_node), _field(op, "op"), _field(op, "phase"), site_class(_field(op, "site")))
        acc = table[key]
        acc[0] += 1
        acc[1] += _field(op, "bytes")
        acc[2] += _field(op, "wire_bytes")
    return _rows(table)


def predicted(shape: EngineShape, layout: Layout, batch: int, prompt_len: int, gen_len: int, dtype: str,
              ranks_per_node: int) -> list[dict]:
    """The analytic model's calls, split by tier; same keys as ``measured``."""
    table: dict = defaultdict(lambda: [0, 0, 0])
    for phase, n, ops in volume.forward_kinds(shape, layout, batch, prompt_len, gen_len, dtype):
        for op in ops:
            if op.op == "send_recv":  # calls come as (send src, recv dst) per pair
                tiers = []
                for k in range(0, len(op.calls), 2):
                    pair_tier = tier_of((op.calls[k].rank, op.calls[k + 1].rank), ranks_per_node)
                    tiers += [pair_tier, pair_tier]
            else:
                tiers = [tier_of(op.ranks, ranks_per_node)] * len(op.calls)
            for call, tier in zip(op.calls, tiers):
                acc = table[(tier, call.op, phase, site_class(op.site))]
                acc[0] += n
                acc[1] += n * call.bytes
                acc[2] += n * call.wire_bytes
    return _rows(table)


def per_tier_totals(rows: list[dict], tokens: int) -> dict:
    """``{tier: {"bytes", "wire_bytes", "wire_bytes_per_token", "calls"}}`` for both tiers (zeros included)."""
    out = {t: {"bytes": 0, "wire_bytes": 0, "calls": 0} for t in ("intra", "inter")}
    for r in rows:
        out[r["tier"]]["bytes"] += r["bytes"]
        out[r["tier"]]["wire_bytes"] += r["wire_bytes"]
        out[r["tier"]]["calls"] += r["count"]
    for t in out.values():
        t["wire_bytes_per_token"] = t["wire_bytes"] / tokens
    return out


def diff(predicted_rows: list[dict], measured_rows: list[dict]) -> list[str]:
    """One line per key whose count, bytes or wire bytes differ (empty: exact agreement)."""
    pred = {tuple(r[k] for k in KEYS): r for r in predicted_rows}
    meas = {tuple(r[k] for k in KEYS): r for r in measured_rows}
    lines = []
    for key in sorted(set(pred) | set(meas)):
        p, m = pred.get(key), meas.get(key)
        pv = (p["count"], p["bytes"], p["wire_bytes"]) if p else (0, 0, 0)
        mv = (m["count"], m["bytes"], m["wire_bytes"]) if m else (0, 0, 0)
        if pv != mv:
            lines.append(f"{'/'.join(map(str, key))}: predicted count/bytes/wire {pv}, measured {mv}")
    return lines
