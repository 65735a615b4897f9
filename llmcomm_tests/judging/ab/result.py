"""The A/B comparison of a case as the typed :class:`~llmcomm_tests.core.documents.CaseResult` that
reports, JUnit and the HTML are built from.

The comparison itself (``ABResult.report()``: both environments, the difference, schedule and
seed, pairs, every metric's change, and each arm's versions of what differs) is the result's ``ab``
field.  Before the first pair both arms are prepared for the case's framework: two environments
that cannot run it side by side fail the case with one line, and no pair runs.
"""

from __future__ import annotations

import dataclasses
import sys

from llmcomm_tests.core.documents import FAIL, NA, PASS, CaseResult, Verdict, VerdictRow, to_json
from llmcomm_tests.judging.ab import gate
from llmcomm_tests.judging.ab.arms import ArmEnv, ArmError, env_difference, versions
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
    framework = getattr(case, "framework", "ours")
    result = refusal(framework, request) or gate_case(case, cfg, request)
    ab = result.report()
    ab["versions"] = versions(result.env_a, result.env_b)
    return CaseResult(spec=case.spec_name, path=str(case.path), case_id=case.id, hardware=hardware,
                      backend=request.backend, env=env, ab=to_json(ab),
                      prediction=prediction, verdict=Verdict(case.id, result.rows), run=None,
                      error=result.error, properties=properties(result))


def refusal(framework: str, request: ABRequest) -> ABResult | None:
    """None when both arms can run ``framework``'s cases (they then run its engine); else the
    case's result: one failed row naming the arm, its python and why."""
    envs = [ArmEnv(sys.executable, framework=framework), ArmEnv(request.arm_b, framework=framework)]
    try:
        for i, (name, python) in enumerate((("A", sys.executable), ("B", request.arm_b))):
            server = gate.arm(name, python, request.owner)
            envs[i] = dataclasses.replace(server.env, framework=framework)
            server.prepare(framework, request.backend)
    except ArmError as exc:
        line = str(exc).splitlines()[0]
        return ABResult([VerdictRow("ab", "ab arms", FAIL, detail=line)], envs[0], envs[1], {}, error=line)
    return None
