"""The A/B result in the plain-dict case result that ``pipeline.run_and_check`` returns today.

Temporary: once the pipeline builds typed :class:`~llmcomm_tests.documents.CaseResult`\\ s, the
pipeline puts ``ABResult.rows`` into its ``Verdict`` directly and this module goes.
"""

from __future__ import annotations

from ..documents import FAIL, to_json


def row_dict(r) -> dict:
    measured = {"change": r.measured} if r.unit == "change" and r.measured is not None else r.measured
    budget = f"change <= {r.budget:.0%}" if r.budget_label == "change" and r.budget is not None else r.budget
    return {"check": r.check, "name": r.name, "measured": measured, "n": r.n, "model": r.model, "bound": None,
            "budget": budget, "verdict": r.verdict, "detail": r.detail}


def ab_case_result(case, state) -> dict:
    from ..pipeline import prediction
    from .gate import run_case_ab
    from .result import properties

    result = run_case_ab(case, state)
    rows = [row_dict(r) for r in result.rows]
    failed = [r for r in rows if r["verdict"] == FAIL]
    props = properties(result)
    return {"spec": case.spec_name, "path": str(case.path), "case_id": case.id, "hardware": state.hardware,
            "backend": state.backend, "env": state.env, "prediction": prediction(case, state.profile()),
            "run": None, "error": None,
            "verdict": {"case_id": case.id, "passed": not failed, "rows": rows},
            "properties": props, "ab": to_json(result.report())}
