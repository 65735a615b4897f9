"""One case through the whole pipeline: launch → record → metrics → checks → result document.

The result document is what reports and baselines are built from; it is JSON-serialisable so it
can travel from pytest-xdist workers to the controller inside the test report.
"""

from __future__ import annotations

from .checks import Verdict, evaluate, row


def run_config(case, state):
    from .measure import RunConfig
    from .inject import parse_faults

    repeats = state.options.repeats if state.options.repeats is not None else case.repeats
    return RunConfig(case.engine, case.layout, batch=case.batch, prompt_len=case.prompt_len, gen_len=case.gen_len,
                     dtype=case.dtype, repeats=max(1, repeats), warmup=case.warmup,
                     inject=tuple(parse_faults(state.options.inject)))


def prediction(case, profile) -> dict:
    from .analytic.e2e import predict_case
    from .analytic.volume import predict_volume

    if profile is None:
        return {"volume": predict_volume(case.engine, case.layout, case.batch, case.prompt_len, case.gen_len,
                                         case.dtype)}
    doc = predict_case(case.engine, case.layout, case.batch, case.prompt_len, case.gen_len, case.dtype, profile)
    return {"volume": doc["volume"], "latency": doc["latency"], "metrics": doc["metrics"]}


def run_and_check(case, state) -> dict:
    from .measure import run_case
    from .launch import LaunchError

    profile = state.profile()
    predicted = prediction(case, profile)
    result = {"spec": case.spec_name, "path": str(case.path), "case_id": case.id, "hardware": state.hardware,
              "backend": state.backend, "env": state.env, "prediction": predicted, "run": None, "error": None}
    try:
        doc = run_case(run_config(case, state), backend=state.backend, timeout_s=state.options.timeout,
                       available_ranks=state.ranks)
    except LaunchError as exc:
        verdict = Verdict(case.id, [row("run", "launch", "fail", detail=str(exc).splitlines()[0])])
        result.update(error=str(exc), verdict=verdict.to_dict(), properties=[("llmcomm.error", str(exc)[:2000])])
        return result
    verdict = evaluate(case, doc, predicted["volume"], profile, state.hardware)
    if state.options.baseline_compare or state.options.baseline_save:
        from . import baseline

        verdict.rows += baseline.handle(case, doc, state)
    result.update(run=doc, verdict=verdict.to_dict(), properties=properties(doc, predicted, verdict))
    return result


def properties(doc: dict, predicted: dict, verdict: Verdict) -> list[tuple[str, str]]:
    """Measured and predicted numbers as JUnit testcase properties (dashboards read these)."""
    m, c = doc["metrics"], doc["comm"]
    props = [("llmcomm.ttft_s.p50", m["ttft"]["p50"]), ("llmcomm.ttft_s.p99", m["ttft"]["p99"]),
             ("llmcomm.tpot_s.p50", m["tpot"]["p50"]), ("llmcomm.tpot_s.p99", m["tpot"]["p99"]),
             ("llmcomm.e2e_s.p50", m["e2e"]["p50"]), ("llmcomm.repeats", m["repeats"]),
             ("llmcomm.bytes_per_token", c["bytes_per_token"]), ("llmcomm.comm_share", c["comm_share"]),
             ("llmcomm.comm_time_per_token_s", c["comm_time_per_token_s"]),
             ("llmcomm.wire_bytes", c["wire_bytes_total"]),
             ("llmcomm.wire_bytes.model", sum(r["wire_bytes"] for r in predicted["volume"]))]
    if "metrics" in predicted:
        pm = predicted["metrics"]
        props += [("llmcomm.ttft_s.model", pm["ttft_s"]), ("llmcomm.tpot_s.model", pm["tpot_s"])]
    props.append(("llmcomm.checks", f"{sum(r['verdict'] == 'pass' for r in verdict.rows)} pass, "
                                    f"{len(verdict.failed)} fail, {sum(r['verdict'] == 'n/a' for r in verdict.rows)} n/a"))
    return [(k, f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in props]
