"""How well a hardware profile predicts the op durations a run really recorded.

One mapping from a recorded op (a run document's ``ops`` record: ``{rank, op, group, bytes,
wire_bytes, phase, site, duration_s, …}``) to the latency model's terms — latency op, group size,
``msg_bytes`` (volume.op_instances' convention: the buffer for all_reduce / broadcast / send_recv,
the gathered *total* for all_gather and gather, the input for reduce_scatter) and link tier — shared
by ``bounds_for_record`` (one record: lower, upper, predicted) and ``accuracy_rows`` (per op class:
median error and the share of records inside the bounds).  No torch import.

Waiting.  A recorded duration runs from issue to completion on *that* rank, so a call whose rank
arrives before its peers also times the peers' lateness.  For most calls that lateness is noise
(the TP ranks of a group run the same compute), but for three kinds it is the engine's schedule:
the call waits for compute on other ranks by construction, and its duration says more about the
pipeline than about the link.  Those are ``WAITING`` and have no communication bound
(``bounds_for_record`` returns None; ``accuracy_rows`` reports them apart):

* ``recv`` (every site) — the receiver posts its recv before the sender has produced the data:
  at ``pp.boundary{i}`` it waits for stage i−1's whole forward; at ``pp.tokens`` global rank 0
  waits for every later stage and the sampling.
* ``broadcast`` at a non-root rank (``tokens.broadcast``, wire_bytes 0) — it waits for the root
  (global rank 0) to sample the next ids (TP) or to receive them from the last stage (TP × PP).
* ``gather`` at the root (the sampler, wire_bytes 0) — it waits for the slowest peer's LM-head
  slice.

The sending halves are bounded: ``send`` (gloo hands the buffer to the transport and returns),
``broadcast`` at the root, ``gather`` at a non-root rank, and every all_reduce / all_gather /
reduce_scatter (their ranks arrive together, up to scheduling noise).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import TYPE_CHECKING

from ..metrics import percentile
from . import latency
from ..contract import latency_op

if TYPE_CHECKING:
    from ..engine.layout import Layout
    from .hardware import HardwareProfile

# (recorded op, role) -> why its duration includes waiting for other ranks' compute.  Role is
# "root" / "peer" for rooted collectives (told apart by the contract's wire bytes), "" otherwise.
WAITING: dict[tuple[str, str], str] = {
    ("recv", ""): "waits for the sender's stage to compute (pp.boundary) or the rest of the pipeline (pp.tokens)",
    ("broadcast", "peer"): "waits for the root to sample (TP) or to receive the ids from the last stage (PP)",
    ("gather", "root"): "waits for the slowest peer's LM-head slice",
}

def role_of(record: dict) -> str:
    """``root`` / ``peer`` for gather and broadcast (gather: 0 wire bytes at the root; broadcast:
    the payload on the wire at the root — docs/communication.md), ``""`` for everything else."""
    op = record["op"]
    if op == "gather":
        return "root" if record["wire_bytes"] == 0 and record["bytes"] > 0 else "peer"
    if op == "broadcast":
        return "root" if record["wire_bytes"] == record["bytes"] else "peer"
    return ""


def waiting_reason(record: dict) -> str | None:
    """Why this record's duration includes waiting for other ranks' compute, or None."""
    return WAITING.get((record["op"], role_of(record)))


def _p2p_peer(record: dict, layout: "Layout | None") -> int | None:
    if "peer" in record:
        return int(record["peer"])
    if layout is None:
        return None
    site, rank, send = record.get("site", ""), record["rank"], record["op"] == "send"
    if site.startswith("pp.boundary"):
        return rank + layout.tp if send else rank - layout.tp
    if site == "pp.tokens":
        return 0 if send else layout.rank_of(layout.pp - 1, 0)
    return None


def record_instance(record: dict, layout: "Layout | None" = None) -> dict | None:
    """The latency model's view of one recorded call: ``{op, group_size, msg_bytes, ranks, role,
    waiting}`` (``op`` the latency.py op, ``send``/``recv`` → ``send_recv``; ``ranks`` the ranks
    the transfer spans, for the tier), or None for ops the model does not time (barrier,
    all_to_all, scatter, reduce).

    Point-to-point ranks come from a ``peer`` field if the record has one, else from ``layout``
    and the site (pp.boundary{i}: the same tp_rank one stage over; pp.tokens: the sampler and
    global rank 0); with neither, the record's own rank alone (one host: always ``intra``)."""
    op = latency_op(record["op"])
    if op is None:
        return None
    group = list(record.get("group") or [record["rank"]])
    t = len(group)
    nbytes = int(record["bytes"])
    if op == "send_recv":
        peer = _p2p_peer(record, layout)
        ranks = [record["rank"]] if peer is None else sorted({record["rank"], peer})
        group_size = 2
        msg = nbytes
    else:
        ranks, group_size = group, t
        msg = nbytes * t if op in ("all_gather", "gather") else nbytes
    return {"op": op, "group_size": group_size, "msg_bytes": msg, "ranks": ranks, "role": role_of(record),
            "waiting": waiting_reason(record)}


def bounds_for_record(profile: "HardwareProfile", record: dict, layout: "Layout | None" = None,
                      algorithm: str | None = None) -> tuple[float, float, float] | None:
    """``(lower_s, upper_s, predicted_s)`` for one recorded call under ``profile``; None for the
    ``WAITING`` classes (their duration is the schedule, not the link), for ops the model does not
    time, and for groups of one rank."""
    inst = record_instance(record, layout)
    if inst is None or inst["waiting"] is not None:
        return None
    tier = profile.tier_of(inst["ranks"])
    args = (profile, inst["op"], inst["group_size"], inst["msg_bytes"], tier)
    predicted = latency.op_time(*args, algorithm=algorithm)
    if predicted == 0.0:
        return None
    lower, upper = latency.bounds(*args, algorithm=algorithm)
    return lower, upper, predicted


def fit_spread(profile: "HardwareProfile", docs: list[dict], quantile: float = 0.999,
               algorithm: str | None = None) -> tuple["HardwareProfile", list[str]]:
    """The profile with each fit's upper-bound spread ``k_hi`` re-measured on real engine runs.

    A sweep times an op after a barrier, ranks aligned; inside the engine a rank reaches a
    collective when its own compute is done and, with more ranks than free cores, its peer may not
    be running: the recorded duration adds that lateness to the transfer.  So the α-β *fit* stays
    the sweep's (the transfer's cost, what e2e adds to compute) and only the spread comes from the
    bounded records of ``docs``: per (op, group size, tier), ``k_hi`` = the ``quantile`` of
    recorded / fitted over every record (≥ 1; slack 0).  The fit's ``quality`` keeps the sweep's
    value as ``k_hi_sweep`` and the record count.  The tier's ``alpha_min_s`` is lowered (with a
    note) if any record beats the floor, so the lower bound stays a physical floor.  Use runs that
    are not the ones you then evaluate.  Returns ``(profile, notes)``."""
    from dataclasses import replace

    ratios: dict = defaultdict(list)
    floor_gap: dict = defaultdict(lambda: float("inf"))  # tier -> min(duration - bytes term)
    for rec, inst, _ in _timed_instances(docs):
        if inst["waiting"] is not None:
            continue
        tier = profile.tier_of(inst["ranks"])
        pred = latency.op_time(profile, inst["op"], inst["group_size"], inst["msg_bytes"], tier, algorithm)
        if pred <= 0:
            continue
        group = 2 if inst["op"] == "send_recv" else inst["group_size"]
        ratios[(tier, inst["op"], group)].append(rec["duration_s"] / pred)
        _, n_beta = latency.coefficients(inst["op"], inst["group_size"], "ring")
        bytes_term = n_beta * inst["msg_bytes"] / profile.tier(tier).peak_Bps
        floor_gap[tier] = min(floor_gap[tier], rec["duration_s"] - bytes_term)
    notes = []
    tiers = dict(profile.tiers)
    for tier_name in {k[0] for k in ratios}:
        tier = tiers[tier_name]
        ops = {op: dict(by_group) for op, by_group in tier.ops.items()}
        for (t_name, op, group), values in sorted(ratios.items()):
            if t_name != tier_name:
                continue
            old = profile.fit(op, group, tier_name)
            k_hi = max(1.0, percentile(values, 100 * quantile))
            quality = dict(old.quality or {})
            quality.update(k_hi_sweep=old.k_hi, k_hi_records=len(values), k_hi_quantile=quantile)
            new = replace(old, k_hi=k_hi, slack_s=0.0, quality=quality)
            by_group = ops.setdefault(op, {})
            if group in by_group and by_group.get("default") == old:  # the default is this group's fit
                by_group["default"] = new
            by_group[group] = new
            notes.append(f"{tier_name} {op}[{group}]: k_hi {old.k_hi if old.k_hi is not None else tier.k_hi:.3g}"
                         f" -> {k_hi:.3g} (q{quantile:g} of recorded/fit over {len(values)} engine records)")
        alpha_min = tier.alpha_min_s
        if floor_gap[tier_name] < alpha_min:
            alpha_min = max(floor_gap[tier_name] / 2, 0.0)
            notes.append(f"{tier_name}: a record beat alpha_min_s {tier.alpha_min_s:.3g} s; "
                         f"lowered to {alpha_min:.3g} s")
        tiers[tier_name] = replace(tier, ops=ops, alpha_min_s=alpha_min)
    out = replace(profile, tiers=tiers, notes=list(profile.notes) + notes)
    out.validate()
    return out, notes


def _layout_of(doc: dict) -> "Layout":
    from ..engine.layout import Layout

    return Layout(int(doc["case"]["tp"]), int(doc["case"]["pp"]))


ROW_KEYS = ("op", "group_size", "role", "phase", "waiting", "n", "median_measured_s", "median_predicted_s",
            "median_rel_err", "medians_rel_err", "inside", "below_lower", "above_upper", "inside_share")


def _timed_instances(docs: list[dict]):
    """(record, its latency-model instance, layout) for every timed record the model knows."""
    for doc in docs:
        layout = _layout_of(doc)
        for rec in doc["ops"]:
            inst = record_instance(rec, layout) if rec.get("duration_s") is not None else None
            if inst is not None:
                yield rec, inst, layout


def accuracy_rows(docs: list[dict], profile: "HardwareProfile", *, by_phase: bool = False,
                  algorithm: str | None = None) -> list[dict]:
    """Per op class — (recorded op, group size, role[, phase]) over every timed record of every run
    document — ``n``, median measured and predicted seconds, the median of |pred − meas| / meas
    over the records (``median_rel_err``: a per-record error, so it also measures the class's own
    spread), |median pred − median meas| / median meas (``medians_rel_err``: the model's error on
    the typical op), and how many records fall inside [lower, upper] (``inside_share``), below the
    floor and above the upper bound.  ``waiting`` is the ``WAITING`` reason (those rows carry
    no prediction: None in the predicted/bounds fields) or None.  Sorted bounded classes first,
    then by (op, group size, role, phase)."""
    table: dict = defaultdict(list)
    for rec, inst, layout in _timed_instances(docs):
        key = (rec["op"], inst["group_size"], inst["role"], rec["phase"] if by_phase else "all")
        table[key].append((rec, inst, layout))
    rows = []
    for (op, group, role, phase), items in table.items():
        measured = [rec["duration_s"] for rec, _, _ in items]
        waiting = items[0][1]["waiting"]
        row = {"op": op, "group_size": group, "role": role, "phase": phase, "waiting": waiting, "n": len(items),
               "median_measured_s": statistics.median(measured), "median_predicted_s": None,
               "median_rel_err": None, "medians_rel_err": None, "inside": None, "below_lower": None,
               "above_upper": None, "inside_share": None}
        if waiting is None:
            preds, errs, inside, below, above = [], [], 0, 0, 0
            for rec, inst, layout in items:
                lower, upper, pred = bounds_for_record(profile, rec, layout, algorithm)
                meas = rec["duration_s"]
                preds.append(pred)
                errs.append(abs(pred - meas) / meas if meas > 0 else float("inf"))
                if meas < lower:
                    below += 1
                elif meas > upper:
                    above += 1
                else:
                    inside += 1
            med_pred, med_meas = statistics.median(preds), row["median_measured_s"]
            row.update(median_predicted_s=med_pred, median_rel_err=statistics.median(errs),
                       medians_rel_err=abs(med_pred - med_meas) / med_meas if med_meas > 0 else float("inf"),
                       inside=inside, below_lower=below, above_upper=above, inside_share=inside / len(items))
        rows.append(row)
    return sorted(rows, key=lambda r: (r["waiting"] is not None, r["op"], r["group_size"], r["role"], r["phase"]))


def summary(rows: list[dict], max_median_err: float = 0.10, min_inside: float = 0.99) -> dict:
    """Pooled over the bounded rows: records, inside share, and which classes miss the goals."""
    bounded = [r for r in rows if r["waiting"] is None]
    n = sum(r["n"] for r in bounded)
    inside = sum(r["inside"] for r in bounded)
    return {
        "records": n, "inside": inside, "inside_share": inside / n if n else None,
        "below_lower": sum(r["below_lower"] for r in bounded), "above_upper": sum(r["above_upper"] for r in bounded),
        "classes": len(bounded),
        "error_misses": [r for r in bounded if r["median_rel_err"] > max_median_err],
        "median_error_misses": [r for r in bounded if r["medians_rel_err"] > max_median_err],
        "bounds_misses": [r for r in bounded if r["inside_share"] < min_inside],
        "waiting_records": sum(r["n"] for r in rows if r["waiting"] is not None),
    }


def format_rows(rows: list[dict]) -> str:
    """Plain-text table of ``accuracy_rows``."""
    head = (f"{'op':>10} {'t':>2} {'role':>4} {'phase':>7} {'n':>6} {'meas_med_us':>11} {'pred_med_us':>11} "
            f"{'med|err|':>8} {'err(med)':>8} {'inside':>7} {'<lower':>6} {'>upper':>6}")
    lines = [head]
    for r in rows:
        common = f"{r['op']:>10} {r['group_size']:>2} {r['role'] or '-':>4} {r['phase']:>7} {r['n']:>6} " \
                 f"{r['median_measured_s'] * 1e6:>11.1f}"
        if r["waiting"] is None:
            lines.append(f"{common} {r['median_predicted_s'] * 1e6:>11.1f} {r['median_rel_err']:>8.1%} "
                         f"{r['medians_rel_err']:>8.1%} {r['inside_share']:>7.2%} {r['below_lower']:>6} "
                         f"{r['above_upper']:>6}")
        else:
            lines.append(f"{common}   includes pipeline wait: not bounded")
    return "\n".join(lines)
