"""Measured vs analytic model vs budget → verdict rows.

Three kinds of check per case:

* volume  – recorded count, bytes and wire bytes per (op, phase, site class) equal the analytic
            model exactly (bytes are deterministic: any difference is a finding);
* latency – each op class's measured durations fall inside the model's two-sided bounds for at
            least the spec's ``inside_fraction`` of samples: a class fails when a one-sided binomial
            test says, at 95 % confidence, that its true share inside is below that fraction (a
            statement about the distribution, robust to a noisy host, not about one sample);
* budget  – the SLO budgets that apply to this hardware hold at their percentiles; budgets
            written for other hardware are reported as not applicable, never passed or failed.

Each check gives typed rows (``documents.VerdictRow``): numbers with their unit, verdict one of
pass | fail | n/a; the text is made where it is shown.
"""

from __future__ import annotations

from .analytic.accuracy import class_bounds
from .documents import FAIL, NA, PASS, OpSummary, RunDocument, Verdict, VerdictRow, VolumeRow
from .stats import binomial_cdf, percentile
from .text import fmt

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


# -- latency --------------------------------------------------------------------------------------


def latency_rows(summaries: list[OpSummary], profile, tolerance) -> list[VerdictRow]:
    """Per op class (op, phase, site class, group size): share of calls inside the bounds."""
    classes: dict[str, list[tuple]] = {}
    waiting: dict[str, list[OpSummary]] = {}
    for s in summaries:
        if s.latency is None:
            continue
        b = None if s.waiting else class_bounds(profile, s.op, s.ranks, s.bytes)
        if b is None:
            waiting.setdefault(s.name, []).append(s)
        else:
            classes.setdefault(s.name, []).append((s, *b))
    rows = []
    for name, parts in sorted(classes.items()):
        tol = tolerance.for_op(parts[0][0].op)
        n = sum(s.latency.count for s, *_ in parts)
        inside = round(sum(s.latency.share_within(lo * max(0.0, 1 - tol.slack), hi * (1 + tol.slack)) * s.latency.count
                           for s, lo, hi, _ in parts))
        below = round(sum(s.latency.share_within(0.0, lo * max(0.0, 1 - tol.slack)) * s.latency.count
                          for s, lo, hi, _ in parts))
        latency = _merged([s for s, *_ in parts])
        p_value = binomial_cdf(inside, n, tol.inside_fraction)
        detail = f"{inside / n:.0%} of {n} inside (need {tol.inside_fraction:.0%}; p={p_value:.2g})"
        if below:
            detail += f"; {below} below the physical floor (mis-timed?)"
        rows.append(VerdictRow("latency", name, FAIL if p_value < SIGNIFICANCE else PASS, "s", latency.p50,
                               latency.p99, n, model=sorted(p for *_, p in parts)[len(parts) // 2],
                               low=min(lo for _, lo, _, _ in parts), high=max(hi for _, _, hi, _ in parts),
                               detail=detail))
    for name, parts in sorted(waiting.items()):
        latency = _merged(parts)
        reason = parts[0].waiting or "not timed by the α-β model"
        rows.append(VerdictRow("latency", name, NA, "s", latency.p50, latency.p99, latency.count,
                               detail=f"{reason}: not bounded by the α-β model"))
    return rows


def _merged(summaries: list[OpSummary]):
    out = summaries[0].latency
    for s in summaries[1:]:
        out = out.merge(s.latency)
    return out


# -- budgets --------------------------------------------------------------------------------------

_SAMPLES = {
    "ttft": lambda d: d.metrics.ttft.samples,
    "tpot": lambda d: d.metrics.tpot.samples,
    "e2e": lambda d: d.metrics.e2e.samples,
    "itl": lambda d: d.metrics.itl.samples,
    "comm_time_per_token": lambda d: d.comm.time_per_token.samples,
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
            summary = parts[0] if parts else None
            for other in parts[1:]:
                summary = summary.merge(other)
            measured = {} if summary is None else {"p50": summary.p50, "p99": summary.p99, "max": summary.max_s}
            n = summary.count if summary else 0
        else:
            samples = _SAMPLES[budget.metric](doc)
            measured = {"p50": percentile(samples, 50), "p99": percentile(samples, 99),
                        "max": max(samples)} if samples else {}
            n = len(samples)
        for q, limit in limits:
            if not n:
                rows.append(VerdictRow("budget", f"{budget.key} {q}", NA, unit, budget=limit, budget_label=q,
                                       detail="no samples (nothing of this kind ran)"))
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


def evaluate(case, doc: RunDocument, predicted_volume: list[VolumeRow], profile, hardware: str) -> Verdict:
    verdict = Verdict(case.id)
    verdict.rows += volume_rows(doc.volume, predicted_volume)
    if not doc.volume_stable:
        verdict.rows.append(VerdictRow("volume", "repetitions identical", FAIL,
                                       detail="repetitions moved different ops or bytes"))
    if profile is not None:
        verdict.rows += latency_rows(doc.ops, profile, case.tolerances.latency)
    else:
        verdict.rows.append(VerdictRow("latency", "all op classes", NA,
                                       detail=f"no hardware profile for {hardware}: pass --llmcomm-hardware "
                                              "(a preset or a `llmcomm calibrate` YAML)"))
    verdict.rows += budget_rows(case.budgets, doc, hardware)
    return verdict
