"""Verdict rows as text: the failure table (check, name, measured, model, bound, budget, verdict),
and the plain-text table every CLI command prints."""

from __future__ import annotations

from llmcomm_tests.core.documents import VerdictRow
from llmcomm_tests.core.text import fmt, text_table

HEADER = ("check", "op / metric", "measured (p50 / p99, n)", "model", "bound", "budget", "verdict")


def cells(r: VerdictRow) -> tuple[str, ...]:
    if r.measured_wire is not None or r.model_wire is not None:  # a volume row: calls, bytes, wire bytes
        measured = "-" if r.measured is None else f"x{r.n} {fmt(r.measured, 'B')} wire {fmt(r.measured_wire, 'B')}"
        model = "-" if r.model is None else f"x{r.model_n} {fmt(r.model, 'B')} wire {fmt(r.model_wire, 'B')}"
    else:
        measured = fmt(r.measured, r.unit)
        if r.measured_tail is not None:
            measured += f" / {fmt(r.measured_tail, r.unit)}"
        if r.n:
            measured += f" (n={r.n})"
        model = fmt(r.model, r.unit)
    bound = "-" if r.low is None and r.high is None else f"[{fmt(r.low, r.unit)}, {fmt(r.high, r.unit)}]"
    budget = "-" if r.budget is None else f"{r.budget_label} <= {fmt(r.budget, r.unit)}"
    return (r.check, r.name, measured, model, bound, budget,
            r.verdict.upper() + (f" ({r.detail})" if r.detail else ""))


def format_table(rows: list[VerdictRow], only_failed: bool = False) -> str:
    return text_table(HEADER, [cells(r) for r in rows if not only_failed or r.verdict == "fail"])
