"""Measured vs analytic model vs budget → verdict rows.

Three kinds of check per case:

* volume  – recorded count, bytes and wire bytes per (op, phase, site class) equal the analytic
            model exactly (bytes are deterministic: any difference is a finding);
* latency – per op class, the *transfer* (each call's time after the last peer arrived,
            ``runtime/arrival.py``; the wait before it is the schedule, not the link): its median, with a
            distribution-free interval, must sit in the model's band, and its tail quantile (the
            profile's ``tail_q``, at least the spec's ``inside_fraction``) under the tail allowance —
            a one-sided binomial test, so one slow sample on a busy host fails nothing.  Every row is
            a test at level ``session share / (timed cases in the session × rows in the case)``
            (Bonferroni; the share: 5 %, or half of it when stored baselines are judged too,
            judging/levels.py): an unchanged suite fails at most 5 % of its runs, however many cases
            it holds.  Each row states its level and the smallest slowdown of every transfer it
            would have caught there.  Band and allowance come from a calibration under the
            engine's conditions, not from these records;
* budget  – the SLO budgets that apply to this hardware hold at their percentiles; budgets
            written for other hardware are reported as not applicable, never passed or failed.

Each check gives typed rows (``documents.VerdictRow``): numbers with their unit, verdict one of
pass | fail | n/a; the text is made where it is shown.
"""

from __future__ import annotations

import math
from dataclasses import replace

from llmcomm_tests.analytic import tiers
from llmcomm_tests.analytic.accuracy import class_transfer
from llmcomm_tests.analytic.latency import transfer_role
from llmcomm_tests.core.contract import POINT_TO_POINT
from llmcomm_tests.core.documents import FAIL, NA, PASS, OpSummary, RunDocument, Verdict, VerdictRow, VolumeRow
from llmcomm_tests.core.stats import binomial_cdf, median_ci, percentile, smallest_binomial_rejection
from llmcomm_tests.core.text import fmt

SIGNIFICANCE = 0.05


# -- volume ---------------------------------------------------------------------------------------


def volume_rows(measured: list[VolumeRow], predicted: list[VolumeRow]) -> list[VerdictRow]:
    got = {r.key: r for r in measured}
    want = {r.key: r for r in predicted}
    rows = []
    for k in sorted(set(got) | set(want)):
        g, w = got.get(k), want.get(k)
        fields = ("count", "bytes", "wire_bytes")
        if g is None or w is None:
            detail = "not in the model" if w is None else "not recorded"
        else:
            detail = ", ".join(f"{f} {getattr(g, f)} != {getattr(w, f)}" for f in fields if getattr(g, f) != getattr(w, f))
        rows.append(VerdictRow("volume", " ".join(k), FAIL if detail else PASS, "B",
                               measured=g.bytes if g else None, n=g.count if g else None,
                               model=w.bytes if w else None, model_n=w.count if w else None,
                               measured_wire=g.wire_bytes if g else None, model_wire=w.wire_bytes if w else None,
                               detail=detail))
    return rows


def tier_rows(case, doc: RunDocument) -> list[VerdictRow]:
    """Per link tier (intra: within a node, inter: across nodes), the recorded calls of one
    repetition classified by the nodes they span against the model's calls classified the same way
    (analytic/tiers.py): exact, like the volume rows (bytes as called, and wire bytes: what the
    tier's links carry)."""
    per_node = case.topology.ranks_per_node
    predicted = tiers.predicted(case.engine, case.layout, case.batch, case.prompt_len, case.gen_len, case.dtype,
                                per_node)
    measured = tiers.measured(doc.records, per_node)
    differ = tiers.diff(predicted, measured)
    got, want = tiers.per_tier_totals(measured, 1), tiers.per_tier_totals(predicted, 1)
    rows = []
    for tier in ("intra", "inter"):
        lines = [ln for ln in differ if ln.startswith(f"{tier}/")]
        rows.append(VerdictRow("volume", f"{tier}-node tier ({per_node} ranks per node)", FAIL if lines else PASS,
                               "B", measured=got[tier]["bytes"], n=got[tier]["calls"],
                               model=want[tier]["bytes"], model_n=want[tier]["calls"],
                               measured_wire=got[tier]["wire_bytes"], model_wire=want[tier]["wire_bytes"],
                               detail="; ".join(lines[:3]) + (f"; {len(lines) - 3} more" if len(lines) > 3 else "")))
    return rows


# -- latency --------------------------------------------------------------------------------------

MIN_TAIL_SAMPLES = 10  # below this a tail quantile is a guess: the tail row says n/a


def latency_rows(summaries: list[OpSummary], profile, tolerance, world_size: int | None = None,
                 timed_cases: int = 1, unsplit: str | None = None, session_level: float = SIGNIFICANCE,
                 off_host=None) -> list[VerdictRow]:
    """Per op class: the transfer's centre against the model's band, and its tail against the
    tail allowance (two rows).  Wait is not judged here: it is the schedule, not the link.
    ``timed_cases``: how many cases of the session are judged so (the test family's size).
    A class whose calls have no split gets an n/a row saying why (``unsplit``: the run's reason), and
    so does one whose op the host anchor found outside its calibration here (``off_host``: a
    ``HostAnchor``, calibration/anchor.py)."""
    classes: dict[tuple, list[OpSummary]] = {}
    unsplit_classes: dict[str, int] = {}
    for s in summaries:
        if s.transfer is not None:
            classes.setdefault((s.name, s.role, s.bytes), []).append(s)
        elif s.count:
            label = f"{s.name} {s.role}".rstrip()
            unsplit_classes[label] = unsplit_classes.get(label, 0) + s.count
    # Every row is a test: at 5 % each, a case of 20 classes would fail most unchanged runs, and a
    # suite of 20 cases at 5 % each most CI runs.  Bonferroni over the session's rows keeps its
    # false-alarm rate at 5 %: two tests per class (centre and tail), classes per case, cases.
    alpha = session_level / max(1, timed_cases) / max(1, 2 * len(classes))
    rows = []
    for (name, role, _), parts in sorted(classes.items()):
        label = f"{name} {role}".rstrip()
        band = class_transfer(profile, parts[0].op, parts[0].ranks, parts[0].bytes, role, world_size)
        transfer = _merged([s.transfer for s in parts])
        if band is None:
            rows.append(VerdictRow("latency", f"{label} transfer", NA, "s", transfer.p50, transfer.p99,
                                   transfer.count, detail="not timed by the α-β model"))
            continue
        elsewhere = off_host.reason_for(*_model_op(parts[0].op, role)) if off_host is not None else None
        if elsewhere:
            rows.append(VerdictRow("latency", f"{label} transfer", NA, "s", transfer.p50, transfer.p99,
                                   transfer.count, model=band[0], detail=elsewhere))
            continue
        tol = tolerance.for_op(parts[0].op)
        model, low, high, tail_q, tail_s = band
        low, high, tail_s = low * max(0.0, 1 - tol.slack), high * (1 + tol.slack), tail_s * (1 + tol.tail_margin)
        rows.append(_centre_row(label, transfer, model, low, high, alpha))
        rows.append(_tail_row(label, transfer, model, max(tail_q, tol.inside_fraction), tail_s, alpha))
    for label, count in sorted(unsplit_classes.items()):
        if any(f"{name} {role}".rstrip() == label for name, role, _ in classes):
            continue  # some of its calls were split and judged above
        rows.append(VerdictRow("latency", f"{label} transfer", NA, "s", n=count,
                               detail=f"no wait/transfer split: {unsplit or 'calls not matched with all their peers'}"))
    return rows


def unconfirmed(rows: list[VerdictRow], summaries: list[OpSummary], reprobe) -> list[VerdictRow]:
    """``rows`` with each failed latency row whose op the re-run host anchor (``reprobe``: a
    ``HostAnchor`` probed after the case failed, calibration/anchor.py) did not show inside its
    calibration turned n/a, its numbers kept and the probe's reason first; every other row as it was.
    A failure on a host that had slowed is no evidence against the engine: the family-wise rate of
    the rows that still fail is the one they were judged at."""
    ops = {f"{s.name} {s.role}".rstrip(): _model_op(s.op, s.role) for s in summaries if s.transfer is not None}
    out = []
    for row in rows:
        label = row.name.rsplit(" transfer", 1)[0]
        reason = (reprobe.reason_for(*ops[label]) if row.check == "latency" and row.verdict == FAIL and label in ops
                  else None)
        out.append(replace(row, verdict=NA, detail=f"{reason}; the row: {row.detail}") if reason else row)
    return out


def _model_op(op: str, role: str) -> tuple[str, str]:
    """The model's (op, role) of a recorded class: a send or a recv is one side of ``send_recv``."""
    return ("send_recv" if op in POINT_TO_POINT else op), transfer_role(op, role)


def _centre_row(label: str, transfer, model: float, low: float, high: float, alpha: float) -> VerdictRow:
    """The median transfer with its distribution-free (1 − alpha) interval against [low, high]."""
    ci = median_ci(transfer.samples, 1 - alpha)
    centre = transfer.p50
    if ci is None:
        return VerdictRow("latency", f"{label} transfer centre", NA, "s", centre, n=transfer.count, model=model,
                          low=low, high=high,
                          detail=f"{transfer.count} samples: too few for a {_confidence(alpha)} interval of the median",
                          level=alpha)
    lo_ci, hi_ci = ci
    outside = lo_ci > high or hi_ci < low
    # every transfer slower by this factor puts the interval's lower end above the band
    detectable = max(0.0, high / lo_ci - 1) if lo_ci > 0 else math.inf
    detail = (f"median {fmt(centre, 's')} [{_confidence(alpha)} CI {fmt(lo_ci, 's')}, {fmt(hi_ci, 's')}] = {centre / model:.2f}x model; "
              f"band {low / model:.2f}x-{high / model:.2f}x; level {alpha:.2g}: detects >= {detectable:.1%} slower")
    if outside:
        detail = ("above" if lo_ci > high else "below") + " the band: " + detail
    return VerdictRow("latency", f"{label} transfer centre", FAIL if outside else PASS, "s", centre, n=transfer.count,
                      model=model, low=low, high=high, detail=detail, level=alpha, detectable=detectable)


def _confidence(alpha: float) -> str:
    """1 − alpha as a percentage with the digits that tell it from 100 % (a session of 20 cases
    tests at 99.99x %, which one decimal would print as 100.0 %)."""
    decimals = max(1, math.ceil(-math.log10(alpha)) - 2)
    return f"{100 * (1 - alpha):.{decimals}f}%"


def _tail_row(label: str, transfer, model: float, q: float, limit: float, alpha: float) -> VerdictRow:
    """The share of transfers under the tail allowance: fails when a one-sided binomial test says,
    at level ``alpha``, that fewer than ``q`` of them are (the distribution, not one sample)."""
    tail = transfer.quantile(q)
    name = f"{label} transfer p{q * 100:g}"
    if transfer.count < MIN_TAIL_SAMPLES:
        return VerdictRow("latency", name, NA, "s", tail, n=transfer.count, model=model, budget=limit,
                          budget_label=f"p{q * 100:g}", detail=f"{transfer.count} samples: too few for a tail",
                          level=alpha)
    under = round(transfer.share_within(0.0, limit) * transfer.count)
    p_value = binomial_cdf(under, transfer.count, q)
    # the row fails once at most k of the samples lie under the allowance: every transfer slower
    # than limit / x_(k+1) does that
    k = smallest_binomial_rejection(transfer.count, q, alpha)
    xs = sorted(transfer.samples)  # past SAMPLE_CAP a uniform sample: its quantile stands for x_(k+1)
    x_next = xs[min(len(xs) - 1, k * len(xs) // transfer.count)] if k is not None and xs else 0.0
    detectable = max(0.0, limit / x_next - 1) if x_next > 0 else math.inf
    detail = (f"{under / transfer.count:.0%} of {transfer.count} under {limit / model:.1f}x model (need {q:.0%}; "
              f"p={p_value:.2g}, level {alpha:.2g}: "
              + (f"detects >= {detectable:.1%} slower)" if k is not None else "cannot fail with so few samples)"))
    return VerdictRow("latency", name, FAIL if p_value < alpha else PASS, "s", tail, n=transfer.count,
                      model=model, budget=limit, budget_label=f"p{q * 100:g}", detail=detail, level=alpha,
                      detectable=detectable)


def _merged(summaries):
    out = summaries[0]
    for s in summaries[1:]:
        out = out.merge(s)
    return out


def kernel_count_row(timing) -> VerdictRow:
    """The profiler's communication kernels against the recorder's calls, per rank and op family:
    a count that differs is a finding (the recorder missed calls, or something else launched
    communication), and the calls of that family keep no kernel time."""
    detail = "; ".join(timing.mismatches[:4]) + (f"; {len(timing.mismatches) - 4} more" if len(timing.mismatches) > 4 else "")
    return VerdictRow("latency", "communication kernels = recorded calls", FAIL if timing.mismatches else PASS,
                      n=timing.timed_calls, detail=detail or f"{timing.timed_calls} calls timed by their kernels")


# -- budgets --------------------------------------------------------------------------------------

_SAMPLES = {
    "ttft": lambda d: d.metrics.ttft.samples,
    "tpot": lambda d: d.metrics.tpot.samples,
    "e2e": lambda d: d.metrics.e2e.samples,
    "itl": lambda d: d.metrics.itl.samples,
    "comm_time_per_token": lambda d: d.comm.time_per_token.samples,
    "wait_per_token": lambda d: d.comm.wait_per_token.samples,
    "comm_share": lambda d: d.comm.share.samples,
    "bytes_per_token": lambda d: [d.comm.bytes_per_token],
}
UNITS = {"comm_share": "fraction", "bytes_per_token": "B"}


def budget_rows(budgets, doc: RunDocument, hardware: str) -> list[VerdictRow]:
    """One row per budgeted statistic (``ttft p99``, ``bytes_per_token max``, …)."""
    rows = []
    for budget in budgets:
        unit = UNITS.get(budget.metric, "s")
        limits = [(q, getattr(budget, q)) for q in ("p50", "p99", "max") if getattr(budget, q) is not None]
        if not budget.applies_to(hardware):
            rows += [VerdictRow("budget", f"{budget.key} {q}", NA, unit, budget=v, budget_label=q,
                                detail=f"written for {budget.hardware}; this run is on {hardware}") for q, v in limits]
            continue
        if budget.metric == "op_latency":
            parts = [s.latency for s in doc.ops if s.op == budget.op and s.latency is not None]
            summary = _merged(parts) if parts else None
            measured = {} if summary is None else {"p50": summary.p50, "p99": summary.p99, "max": summary.max_s}
            n = summary.count if summary else 0
        else:
            samples = _SAMPLES[budget.metric](doc)
            measured = {"p50": percentile(samples, 50), "p99": percentile(samples, 99),
                        "max": max(samples)} if samples else {}
            n = len(samples)
        for q, limit in limits:
            if not n:
                why = (doc.comm.wait_missing if budget.metric == "wait_per_token" and doc.comm.wait_missing
                       else "nothing of this kind ran")
                rows.append(VerdictRow("budget", f"{budget.key} {q}", NA, unit, budget=limit, budget_label=q,
                                       detail=f"no samples ({why})"))
                continue
            value = measured[q]
            notes = [f"{q} {fmt(value, unit)} > {fmt(limit, unit)}"] if value > limit else []
            if q == "p99" and n < 100:
                notes.append(f"p99 of {n} samples is near the maximum")
            detail = "; ".join(notes)
            rows.append(VerdictRow("budget", f"{budget.key} {q}", FAIL if value > limit else PASS, unit, value, n=n,
                                   budget=limit, budget_label=q, detail=detail))
    return rows


# -- all together ---------------------------------------------------------------------------------


def evaluate(case, doc: RunDocument, predicted_volume: list[VolumeRow], profile, hardware: str,
             no_latency: str | None = None, timed_cases: int = 1, session_level: float = SIGNIFICANCE,
             off_host=None) -> Verdict:
    """Volume, latency and budget rows of one case; ``no_latency`` says why the latency rows do not
    apply (the profile describes another transport than the one that ran); ``timed_cases``: the
    session's cases with latency rows, over which ``session_level`` (the latency rows' share of the
    session's family-wise rate) is shared; ``off_host``: the host anchor, whose ops outside their
    calibration get n/a rows."""
    verdict = Verdict(case.id)
    verdict.rows += volume_rows(doc.volume, predicted_volume)
    if not doc.volume_stable:
        verdict.rows.append(VerdictRow("volume", "repetitions identical", FAIL,
                                       detail="repetitions moved different ops or bytes"))
    if getattr(case, "topology", None) is not None:
        verdict.rows += tier_rows(case, doc)
    timing = doc.comm_timing
    if timing is not None and (timing.source == "kernels" or timing.mismatches):
        verdict.rows.append(kernel_count_row(timing))
    if no_latency:
        verdict.rows.append(VerdictRow("latency", "all op classes", NA, detail=no_latency))
    elif profile is not None:
        verdict.rows += latency_rows(doc.ops, profile, case.tolerances.latency, case.world_size, timed_cases,
                                     timing.unsplit if timing is not None else None, session_level, off_host)
    else:
        verdict.rows.append(VerdictRow("latency", "all op classes", NA,
                                       detail=f"no hardware profile for {hardware}: pass --llmcomm-hardware "
                                              "(a preset or a `llmcomm calibrate` YAML)"))
    verdict.rows += budget_rows(case.budgets, doc, hardware)
    return verdict
