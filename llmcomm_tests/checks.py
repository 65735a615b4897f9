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

A verdict row: ``{"check", "name", "measured", "n", "model", "bound", "budget", "verdict", "detail"}``
with verdict one of pass | fail | n/a.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from .metrics import percentile
from .contract import site_class

PASS, FAIL, NA = "pass", "fail", "n/a"


@dataclass
class Verdict:
    case_id: str
    rows: list[dict] = field(default_factory=list)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["verdict"] == FAIL]

    @property
    def passed(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict:
        return {"case_id": self.case_id, "passed": self.passed, "rows": self.rows}


def row(check: str, name: str, verdict: str, measured=None, n=None, model=None, bound=None, budget=None,
        detail: str = "") -> dict:
    return {"check": check, "name": name, "measured": measured, "n": n, "model": model, "bound": bound,
            "budget": budget, "verdict": verdict, "detail": detail}


# -- volume ---------------------------------------------------------------------------------------


def volume_rows(measured: list[dict], predicted: list[dict]) -> list[dict]:
    key = lambda r: (r["op"], r["phase"], r["site"])  # noqa: E731
    got = {key(r): r for r in measured}
    want = {key(r): r for r in predicted}
    rows = []
    for k in sorted(set(got) | set(want)):
        g, w = got.get(k), want.get(k)
        fields = ("count", "bytes", "wire_bytes")
        measured_v = {f: g[f] for f in fields} if g else None
        model_v = {f: w[f] for f in fields} if w else None
        ok = measured_v == model_v
        detail = "" if ok else ("not in the model" if w is None else "not recorded" if g is None else
                                ", ".join(f"{f} {measured_v[f]} != {model_v[f]}" for f in fields
                                          if measured_v[f] != model_v[f]))
        rows.append(row("volume", " ".join(k), PASS if ok else FAIL, measured_v, None, model_v, detail=detail))
    return rows


# -- latency --------------------------------------------------------------------------------------


def latency_rows(ops: list[dict], profile, tolerance, layout=None) -> list[dict]:
    """Per op class (op, phase, site class, group size): share of samples inside the bounds."""
    from .analytic.accuracy import bounds_for_record

    classes: dict[tuple, list[tuple]] = defaultdict(list)
    waiting: dict[tuple, list[float]] = defaultdict(list)
    for op in ops:
        if op["duration_s"] is None:
            continue
        peers = "p2p" if op["op"] in ("send", "recv") else len(op["group"])
        k = (op["op"], op["phase"], site_class(op["site"]), peers)
        b = bounds_for_record(profile, op, layout)  # the layout names p2p peers (their link tier)
        if b is None:
            waiting[k].append(op["duration_s"])
        else:
            classes[k].append((op["duration_s"], *b))
    rows = []
    for k, samples in sorted(classes.items()):
        tol = tolerance.for_op(k[0])
        durations = [s[0] for s in samples]
        inside = sum(1 for d, lo, hi, _ in samples if tol.inside(d, lo, hi))
        below = sum(1 for d, lo, hi, _ in samples if d < lo * (1 - tol.slack))
        share = inside / len(samples)
        lo = min(s[1] for s in samples)
        hi = max(s[2] for s in samples)
        p_value = binomial_cdf(inside, len(samples), tol.inside_fraction)
        verdict = FAIL if p_value < SIGNIFICANCE else PASS
        detail = f"{share:.0%} of {len(samples)} inside (need {tol.inside_fraction:.0%}; p={p_value:.2g})"
        if below:
            detail += f"; {below} below the physical floor (mis-timed?)"
        rows.append(row("latency", f"{k[0]} {k[1]} {k[2]} /{k[3]}", verdict, _dist(durations), len(durations),
                        percentile([s[3] for s in samples], 50), [lo, hi], detail=detail))
    for k, durations in sorted(waiting.items()):
        rows.append(row("latency", f"{k[0]} {k[1]} {k[2]} /{k[3]}", NA, _dist(durations), len(durations),
                        detail="includes waiting for a peer's compute: not bounded by the α-β model"))
    return rows


SIGNIFICANCE = 0.05


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p): how likely so few samples inside if the true share were p.
    A class fails only when that is below 5 %: ten samples with one outlier say little, three
    hundred with fifteen percent outside say a lot.  Summed in log space: q**n underflows to 0
    for a few hundred samples."""
    if k >= n:
        return 1.0
    if p >= 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q
            for i in range(k + 1)]
    top = max(logs)
    return min(1.0, math.exp(top) * sum(math.exp(x - top) for x in logs))


def _dist(values: list[float]) -> dict:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99)}


# -- budgets --------------------------------------------------------------------------------------

_SAMPLES = {
    "ttft": lambda d: d["metrics"]["samples"]["ttft_s"],
    "tpot": lambda d: d["metrics"]["samples"]["tpot_s"],
    "e2e": lambda d: d["metrics"]["samples"]["e2e_s"],
    "itl": lambda d: d["metrics"]["itl_s"],
    "comm_time_per_token": lambda d: d["comm"]["samples"]["comm_time_per_token_s"],
    "comm_share": lambda d: d["comm"]["samples"]["comm_share"],
    "bytes_per_token": lambda d: [d["comm"]["bytes_per_token"]],
}


def budget_rows(budgets, doc: dict, hardware: str) -> list[dict]:
    rows = []
    for budget in budgets:
        name = budget.metric if budget.op is None else f"{budget.metric}.{budget.op}"
        limits = [(q, getattr(budget, q)) for q in ("p50", "p99", "max") if getattr(budget, q) is not None]
        if not budget.applies_to(hardware):
            rows.append(row("budget", name, NA, budget=_limits(limits, budget.metric),
                            detail=f"written for {budget.hardware}; this run is on {hardware}"))
            continue
        if budget.metric == "op_latency":
            samples = [o["duration_s"] for o in doc["ops"] if o["op"] == budget.op and o["duration_s"] is not None]
        else:
            samples = _SAMPLES[budget.metric](doc)
        if not samples:
            rows.append(row("budget", name, NA, budget=_limits(limits, budget.metric),
                            detail="no samples (nothing of this kind ran)"))
            continue
        measured = {"p50": percentile(samples, 50), "p99": percentile(samples, 99), "max": max(samples)}
        broken = [f"{q} {_fmt(budget.metric, measured[q])} > {_fmt(budget.metric, v)}"
                  for q, v in limits if measured[q] > v]
        detail = "; ".join(broken) if broken else ""
        if len(samples) < 100 and any(q == "p99" for q, _ in limits):
            detail = (detail + "; " if detail else "") + f"p99 of {len(samples)} samples is near the maximum"
        rows.append(row("budget", name, FAIL if broken else PASS, measured, len(samples),
                        budget=_limits(limits, budget.metric), detail=detail))
    return rows


def _limits(limits, metric: str) -> str:
    return ", ".join(f"{q} <= {_fmt(metric, v)}" for q, v in limits)


def _fmt(metric: str, value: float) -> str:
    if metric == "comm_share":
        return f"{value:.1%}"
    if metric == "bytes_per_token":
        return f"{value:,.0f} B"
    return f"{value * 1e3:.3f} ms"


# -- all together ---------------------------------------------------------------------------------


def evaluate(case, doc: dict, predicted_volume: list[dict], profile, hardware: str) -> Verdict:
    verdict = Verdict(case.id)
    verdict.rows += volume_rows(doc["volume"], predicted_volume)
    if not doc.get("volume_stable", True):
        verdict.rows.append(row("volume", "repetitions identical", FAIL,
                                detail="repetitions moved different ops or bytes"))
    if profile is not None:
        verdict.rows += latency_rows(doc["ops"], profile, case.tolerances.latency, case.layout)
    else:
        verdict.rows.append(row("latency", "all op classes", NA,
                                detail=f"no hardware profile for {hardware}: pass --llmcomm-hardware "
                                       "(a preset or a `llmcomm calibrate` YAML)"))
    verdict.rows += budget_rows(case.budgets, doc, hardware)
    return verdict
