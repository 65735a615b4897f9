"""One case through the whole pipeline: launch → record → metrics → checks → case result.

The case result (``documents.CaseResult``) is what reports and baselines are built from; it travels
from pytest-xdist workers to the controller as JSON (``documents.to_json``) inside the test report.
"""

from __future__ import annotations

from .checks import evaluate
from .documents import (FAIL, CaseResult, PredictedMetrics, PredictedOpClass, Prediction, RunDocument, Verdict,
                        VerdictRow, VolumeRow)


def run_config(case, state):
    from .inject import parse_faults
    from .measure import RunConfig

    repeats = state.options.repeats if state.options.repeats is not None else case.repeats
    return RunConfig(case.engine, case.layout, batch=case.batch, prompt_len=case.prompt_len, gen_len=case.gen_len,
                     dtype=case.dtype, repeats=max(1, repeats), warmup=case.warmup,
                     keep_records=state.options.keep_records, inject=tuple(parse_faults(state.options.inject)))


def prediction(case, profile) -> Prediction:
    from .analytic.e2e import predict_case
    from .analytic.volume import predict_volume

    if profile is None:
        rows = predict_volume(case.engine, case.layout, case.batch, case.prompt_len, case.gen_len, case.dtype)
        return Prediction([VolumeRow(**r) for r in rows])
    doc = predict_case(case.engine, case.layout, case.batch, case.prompt_len, case.gen_len, case.dtype, profile)
    return Prediction([VolumeRow(**r) for r in doc["volume"]], [PredictedOpClass(**r) for r in doc["latency"]],
                      PredictedMetrics(**doc["metrics"]))


def run_and_check(case, state) -> CaseResult:
    from .launch import LaunchError
    from .measure import run_case

    profile = state.profile()
    predicted = prediction(case, profile)
    result = CaseResult(case.spec_name, str(case.path), case.id, state.hardware, state.backend, state.env, predicted,
                        Verdict(case.id))
    try:
        doc = run_case(run_config(case, state), backend=state.backend, timeout_s=state.options.timeout,
                       available_ranks=state.ranks)
    except LaunchError as exc:
        result.verdict.rows.append(VerdictRow("run", "launch", FAIL, detail=str(exc).splitlines()[0]))
        result.error = str(exc)
        result.properties = [("llmcomm.error", str(exc)[:2000])]
        return result
    verdict = evaluate(case, doc, predicted.volume, profile, state.hardware)
    if state.options.baseline_compare or state.options.baseline_save:
        from . import baseline

        verdict.rows += baseline.handle(case, doc, state)
    result.run, result.verdict, result.properties = doc, verdict, properties(doc, predicted, verdict)
    return result


def properties(doc: RunDocument, predicted: Prediction, verdict: Verdict) -> list[tuple[str, str]]:
    """Measured and predicted numbers as JUnit testcase properties (dashboards read these)."""
    m, c = doc.metrics, doc.comm
    props = [("llmcomm.ttft_s.p50", m.ttft.p50), ("llmcomm.ttft_s.p99", m.ttft.p99),
             ("llmcomm.tpot_s.p50", m.tpot.p50), ("llmcomm.tpot_s.p99", m.tpot.p99),
             ("llmcomm.e2e_s.p50", m.e2e.p50), ("llmcomm.repeats", m.repeats),
             ("llmcomm.bytes_per_token", c.bytes_per_token), ("llmcomm.comm_share", c.share.p50),
             ("llmcomm.comm_time_per_token_s", c.time_per_token.p50),
             ("llmcomm.wire_bytes", c.wire_bytes_total),
             ("llmcomm.wire_bytes.model", sum(r.wire_bytes for r in predicted.volume))]
    if predicted.metrics is not None:
        props += [("llmcomm.ttft_s.model", predicted.metrics.ttft_s), ("llmcomm.tpot_s.model", predicted.metrics.tpot_s)]
    props.append(("llmcomm.checks", f"{verdict.count('pass')} pass, {verdict.count('fail')} fail, "
                                    f"{verdict.count('n/a')} n/a"))
    return [(k, f"{v:.6g}" if isinstance(v, float) else str(v)) for k, v in props]
