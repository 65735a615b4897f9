"""One case through the whole pipeline: launch → record → metrics → checks → case result.

The case result (``documents.CaseResult``) is what reports and baselines are built from; it travels
from pytest-xdist workers to the controller as JSON (``documents.to_json``) inside the test report.
"""

from __future__ import annotations

from pathlib import Path

from llmcomm_tests.judging.checks import evaluate
from llmcomm_tests.core.documents import (FAIL, CaseResult, PredictedMetrics, PredictedOpClass, Prediction, RunDocument, Verdict, VerdictRow, VolumeRow)


def run_config(case, state):
    from llmcomm_tests.runtime.faults import parse_faults
    from llmcomm_tests.runtime.run_config import RunConfig

    repeats = state.options.repeats if state.options.repeats is not None else case.repeats
    return RunConfig(case.engine, case.layout, batch=case.batch, prompt_len=case.prompt_len, gen_len=case.gen_len,
                     dtype=case.dtype, repeats=max(1, repeats), warmup=case.warmup,
                     # the tier volume check classifies every call by the nodes it spans
                     keep_records=state.options.keep_records or state.options.trace or case.topology is not None,
                     inject=tuple(parse_faults(state.options.inject)))


def prediction(case, profile) -> Prediction:
    from llmcomm_tests.analytic.e2e import predict_case
    from llmcomm_tests.analytic.volume_frameworks import predict_for

    # Each framework has its own volume pattern (docs/communication.md); latency stays ours.
    volume = [VolumeRow(**r) for r in predict_for(getattr(case, "framework", "ours"), case.engine, case.layout,
                                                  case.batch, case.prompt_len, case.gen_len, case.dtype)]
    if profile is None:
        return Prediction(volume)
    doc = predict_case(case.engine, case.layout, case.batch, case.prompt_len, case.gen_len, case.dtype, profile)
    return Prediction(volume, [PredictedOpClass(**r) for r in doc["latency"]], PredictedMetrics(**doc["metrics"]))


def run_and_check(case, state) -> CaseResult:
    from llmcomm_tests.runtime.faults import never_fired
    from llmcomm_tests.frameworks.registry import adapter_for
    from llmcomm_tests.runtime.netns import ClusterError
    from llmcomm_tests.runtime.launch import LaunchError

    if state.options.ab:  # the A/B gate runs the case in both environments instead (llmcomm_tests/ab)
        from llmcomm_tests.judging.ab.result import case_result

        return case_result(case, state, prediction(case, state.profile_for(case).profile), run_config(case, state))
    try:
        hw = state.profile_for(case)  # --llmcomm-hardware, else the spec's hardware:, else the machine's
    except ValueError as exc:  # the spec names no known profile: a failed case, never n/a rows
        result = CaseResult(case.spec_name, str(case.path), case.id, case.hardware, state.backend, state.env,
                            prediction(case, None), Verdict(case.id, [VerdictRow("run", "hardware", FAIL,
                                                                                 detail=str(exc))]))
        result.error, result.properties = str(exc), [("llmcomm.error", str(exc))]
        return result
    profile = hw.profile
    predicted = prediction(case, profile)
    result = CaseResult(case.spec_name, str(case.path), case.id, hw.name, state.backend, state.env, predicted,
                        Verdict(case.id), hardware_how=hw.how)
    cfg = run_config(case, state)
    try:
        nodes = state.node_launch_for(case)  # None: ranks forked on this host
    except ClusterError as exc:
        result.verdict.rows.append(VerdictRow("run", "nodes", FAIL, detail=str(exc)))
        result.error, result.properties = str(exc), [("llmcomm.error", str(exc))]
        return result
    try:
        doc = adapter_for(getattr(case, "framework", "ours")).run(cfg, backend=state.backend,
                                                                 timeout_s=state.options.timeout,
                                                                 available_ranks=state.ranks, nodes=nodes)
    except LaunchError as exc:
        result.verdict.rows.append(VerdictRow("run", "launch", FAIL, detail=str(exc).splitlines()[0]))
        result.error = str(exc)
        result.properties = [("llmcomm.error", str(exc)[:2000])]
        return result
    if doc.framework and doc.framework.get("tp_plan") is not None:  # transformers: its plan's embedding rule
        from llmcomm_tests.analytic.volume_frameworks import predict_for

        predicted.volume = [VolumeRow(**r) for r in predict_for(
            "transformers", case.engine, case.layout, case.batch, case.prompt_len, case.gen_len, case.dtype,
            tp_plan=doc.framework["tp_plan"])]
    if state.options.trace:  # written here, on the worker: the records need not travel to the controller
        from llmcomm_tests.report.trace import write_trace

        write_trace(doc, Path(state.options.report_dir) / "traces" / f"{case.spec_name}-{case.id}.json", str(case))
        if not state.options.keep_records:
            doc.records = None
    # A profile calibrates torch.distributed over a backend; another framework's own collectives
    # (vLLM's shared-memory all-reduce, …) are another transport: no bound from it.
    other = (f"{case.framework} runs its own collectives; profile {hw.name} calibrates torch.distributed on "
             f"{state.backend}: not bounded" if not adapter_for(case.framework).bounded_by_profile else None)
    # A case on a topology is judged by a profile of that cluster (both tiers, its nodes' own
    # transport), never by one calibrated on a single host: even inside one emulated node a TP2's
    # first prefill all-reduce ran 11x cpu-loopback's model.
    if case.topology is not None and profile is not None and profile.ranks_per_node != case.topology.ranks_per_node:
        other = (f"profile {hw.name} puts {profile.ranks_per_node} ranks on a node, the topology "
                 f"{case.topology.ranks_per_node}: not calibrated on this cluster (llmcomm cluster calibrate, then "
                 f"name the profile with hardware: or --llmcomm-hardware)")
    verdict = evaluate(case, doc, predicted.volume, profile, hw.name, no_latency=other,
                       timed_cases=state.timed_cases)
    # A planted fault that matched no op on any rank planted nothing: a pass would prove nothing.
    if doc.faults_fired:  # our engine counts firings; a framework run plants through its own plugin
        verdict.rows += [VerdictRow("run", "inject", FAIL, detail=m) for m in never_fired(cfg.inject, doc.faults_fired, case.id)]
    # A backend that completed no Work for a call leaves it untimed: say so, never drop its row.
    for rank, missing in enumerate(doc.no_completion):
        verdict.rows += [VerdictRow("latency", f"{name} (rank {rank})", FAIL, n=count,
                                    detail="the backend returned no completion for these calls: they were not timed")
                         for name, count in sorted(missing.items())]
    if state.options.baseline_compare or state.options.baseline_save:
        from llmcomm_tests.judging import baseline

        verdict.rows += baseline.handle(case, doc, state)
    result.run, result.verdict = doc, verdict
    result.properties = [("llmcomm.hardware", f"{hw.name} ({hw.how})")] + properties(doc, predicted, verdict)
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
