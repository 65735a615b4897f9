"""The A/B comparison of a case as the typed :class:`~llmcomm_tests.core.documents.CaseResult` that
reports, JUnit and the HTML are built from.

The comparison itself (``ABResult.report()``: both environments, the difference, schedule and
seed, pairs, every metric's change) is the result's ``ab`` field.
"""

from __future__ import annotations

from llmcomm_tests.core.documents import FAIL, NA, PASS, CaseResult, Verdict, to_json
from llmcomm_tests.judging.ab.arms import env_difference
from llmcomm_tests.judging.ab.gate import ABRequest, ABResult, gate_case


def properties(result: ABResult) -> list[tuple[str, str]]:
    """JUnit testcase properties: what dashboards read."""
    rows = result.rows
    props = [("llmcomm.ab.difference", env_difference(result.env_a, result.env_b)),
             ("llmcomm.ab.seed", str(result.schedule.get("seed"))), ("llmcomm.ab.pairs", str(result.pairs)),
             ("llmcomm.ab.stopped", result.stopped)]
    props += [(f"llmcomm.ab.{c.metric.replace(' ', '_')}.change", f"{c.change:.6g}") for c in result.changes]
    counts = {v: sum(r.verdict == v for r in rows) for v in (PASS, FAIL, NA)}
    props.append(("llmcomm.checks", f"{counts[PASS]} pass, {counts[FAIL]} fail, {counts[NA]} n/a"))
    return props


def case_result(case, prediction, cfg, request: ABRequest, *, hardware: str, env: dict) -> CaseResult:
    """Run ``case`` through both arms; ``prediction`` and ``cfg`` (the run config) are the
    pipeline's own for the case, ``hardware`` and ``env`` the session's."""
    result = gate_case(case, cfg, request)
    return CaseResult(spec=case.spec_name, path=str(case.path), case_id=case.id, hardware=hardware,
                      backend=request.backend, env=env, ab=to_json(result.report()),
                      prediction=prediction, verdict=Verdict(case.id, result.rows), run=None,
                      error=result.error, properties=properties(result))
