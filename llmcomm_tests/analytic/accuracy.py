"""How well a hardware profile predicts the op durations a run really recorded.

One mapping from a recorded call (an op class's op, span and bytes, or one kept ``OpRecord``) to
the latency model's terms — latency op, group size,
``msg_bytes`` (volume.op_instances' convention: the buffer for all_reduce / broadcast / send_recv,
the gathered *total* for all_gather and gather, the input for reduce_scatter) and link tier — shared
by ``class_bounds`` (lower, upper, predicted) and ``accuracy_rows`` (per op class: median error and
the share of records inside the bounds).  No torch import.

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
from dataclasses import replace
from typing import TYPE_CHECKING

from llmcomm_tests.analytic import latency
from llmcomm_tests.core.contract import latency_op
from llmcomm_tests.core.stats import percentile
from llmcomm_tests.core.text import text_table

if TYPE_CHECKING:
    from llmcomm_tests.analytic.hardware import HardwareProfile

# (recorded op, role) -> why its duration includes waiting for other ranks' compute.  Role is
# "root" / "peer" for rooted collectives (told apart by the contract's wire bytes), "" otherwise.
WAITING: dict[tuple[str, str], str] = {
    ("recv", ""): "waits for the sender's stage to compute (pp.boundary) or the rest of the pipeline (pp.tokens)",
    ("broadcast", "peer"): "waits for the root to sample (TP) or to receive the ids from the last stage (PP)",
    ("gather", "root"): "waits for the slowest peer's LM-head slice",
}

def role_of(op: str, nbytes: int, wire_bytes: int) -> str:
    """``root`` / ``peer`` for gather and broadcast (gather: 0 wire bytes at the root; broadcast:
    the payload on the wire at the root — docs/communication.md), ``""`` for everything else."""
    if op == "gather":
        return "root" if wire_bytes == 0 and nbytes > 0 else "peer"
    if op == "broadcast":
        return "root" if wire_bytes == nbytes else "peer"
    return ""


def waiting_reason(op: str, role: str) -> str | None:
    """Why calls of this kind include waiting for other ranks' compute, or None."""
    return WAITING.get((op, role))


def span_of(op: str, rank: int, group, peer: int | None) -> list[int]:
    """The ranks a call's transfer spans (its link tier): the group of a collective, the pair of a
    send/recv (the rank alone when the peer is unknown: one host, always ``intra``)."""
    if op in ("send", "recv"):
        return [rank] if peer is None else sorted({rank, peer})
    return list(group or [rank])


def instance(op: str, span: list[int], nbytes: int) -> dict | None:
    """The latency model's view of a call: ``{op, group_size, msg_bytes, ranks}`` (``op`` the
    latency.py op, ``send``/``recv`` → ``send_recv``), or None for ops the model does not time
    (barrier, all_to_all, scatter, reduce)."""
    model_op = latency_op(op)
    if model_op is None:
        return None
    if model_op == "send_recv":
        return {"op": model_op, "group_size": 2, "msg_bytes": nbytes, "ranks": span}
    t = len(span)
    msg = nbytes * t if model_op in ("all_gather", "gather") else nbytes
    return {"op": model_op, "group_size": t, "msg_bytes": msg, "ranks": span}


def class_bounds(profile: "HardwareProfile", op: str, span: list[int], nbytes: int,
                 algorithm: str | None = None) -> tuple[float, float, float] | None:
    """``(lower_s, upper_s, predicted_s)`` of one call under ``profile``; None for ops the model
    does not time and for groups of one rank (callers leave out the ``WAITING`` kinds)."""
    inst = instance(op, span, nbytes)
    if inst is None:
        return None
    tier = profile.tier_of(inst["ranks"])
    args = (profile, inst["op"], inst["group_size"], inst["msg_bytes"], tier)
    predicted = latency.op_time(*args, algorithm=algorithm)
    if predicted <= 0:
        return None
    lower, upper = latency.bounds(*args, algorithm=algorithm)
    return lower, upper, predicted


def class_transfer(profile: "HardwareProfile", op: str, span: list[int], nbytes: int, role: str = "",
                   world_size: int | None = None, algorithm: str | None = None
                   ) -> tuple[float, float, float, float, float] | None:
    """``latency.transfer_band`` of one call — (model, band low, band high, tail quantile, tail
    limit), seconds — or None for ops the model does not time and groups of one rank.  ``role`` and
    ``world_size`` pick a calibrated variant (a broadcast's peer, a 4-rank run) where there is one."""
    inst = instance(op, span, nbytes)
    if inst is None:
        return None
    band = latency.transfer_band(profile, inst["op"], inst["group_size"], inst["msg_bytes"],
                                 profile.tier_of(inst["ranks"]), algorithm, latency.transfer_role(op, role),
                                 world_size)
    return band if band[0] > 0 else None


def bounds_for_record(profile: "HardwareProfile", record, algorithm: str | None = None
                      ) -> tuple[float, float, float] | None:
    """:func:`class_bounds` of one recorded call (an ``OpRecord``); None for the ``WAITING`` kinds
    (their duration is the schedule, not the link)."""
    if waiting_reason(record.op, role_of(record.op, record.bytes, record.wire_bytes)) is not None:
        return None
    return class_bounds(profile, record.op, span_of(record.op, record.rank, record.group, record.peer),
                        record.bytes, algorithm)


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
    ratios: dict = defaultdict(list)
    floor_gap: dict = defaultdict(lambda: float("inf"))  # tier -> min(duration - bytes term)
    for rec, inst in _timed_instances(docs):
        if inst["waiting"] is not None:
            continue
        tier = profile.tier_of(inst["ranks"])
        pred = latency.op_time(profile, inst["op"], inst["group_size"], inst["msg_bytes"], tier, algorithm)
        if pred <= 0:
            continue
        group = 2 if inst["op"] == "send_recv" else inst["group_size"]
        ratios[(tier, inst["op"], group)].append(rec.duration_s / pred)
        _, n_beta = latency.coefficients(inst["op"], inst["group_size"], "ring")
        bytes_term = n_beta * inst["msg_bytes"] / profile.tier(tier).peak_Bps
        floor_gap[tier] = min(floor_gap[tier], rec.duration_s - bytes_term)
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


ROW_KEYS = ("op", "group_size", "role", "phase", "waiting", "n", "median_measured_s", "median_predicted_s",
            "median_rel_err", "medians_rel_err", "inside", "below_lower", "above_upper", "inside_share")


def _timed_instances(docs):
    """(record, its latency-model instance with role and waiting) for every timed call the model
    knows, over the kept records (``RunDocument.records``) of ``docs``."""
    for doc in docs:
        for rec in doc.records or ():
            if rec.duration_s is None:
                continue
            inst = instance(rec.op, span_of(rec.op, rec.rank, rec.group, rec.peer), rec.bytes)
            if inst is not None:
                role = role_of(rec.op, rec.bytes, rec.wire_bytes)
                yield rec, {**inst, "role": role, "waiting": waiting_reason(rec.op, role)}


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
    for rec, inst in _timed_instances(docs):
        key = (rec.op, inst["group_size"], inst["role"], rec.phase if by_phase else "all")
        table[key].append((rec, inst))
    rows = []
    for (op, group, role, phase), items in table.items():
        measured = [rec.duration_s for rec, _ in items]
        waiting = items[0][1]["waiting"]
        row = {"op": op, "group_size": group, "role": role, "phase": phase, "waiting": waiting, "n": len(items),
               "median_measured_s": statistics.median(measured), "median_predicted_s": None,
               "median_rel_err": None, "medians_rel_err": None, "inside": None, "below_lower": None,
               "above_upper": None, "inside_share": None}
        if waiting is None:
            preds, errs, inside, below, above = [], [], 0, 0, 0
            for rec, inst in items:
                lower, upper, pred = class_bounds(profile, rec.op, inst["ranks"], rec.bytes, algorithm)
                meas = rec.duration_s
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
    body = []
    for r in rows:
        common = [r["op"], r["group_size"], r["role"] or "-", r["phase"], r["n"], f"{r['median_measured_s'] * 1e6:.1f}"]
        if r["waiting"] is None:
            body.append(common + [f"{r['median_predicted_s'] * 1e6:.1f}", f"{r['median_rel_err']:.1%}",
                                  f"{r['medians_rel_err']:.1%}", f"{r['inside_share']:.2%}", r["below_lower"],
                                  r["above_upper"]])
        else:
            body.append(common + ["includes pipeline wait: not bounded", "", "", "", "", ""])
    return text_table(("op", "t", "role", "phase", "n", "meas_med_us", "pred_med_us", "med|err|", "err(med)", "inside",
                       "<lower", ">upper"), body, left=4)
