"""One case through the whole pipeline, in four steps with explicit inputs:

* ``prepare``: case + options + profile → run config and prediction (``CasePlan``);
* ``execute``: run config → run document, through the framework's adapter (``frameworks.registry``);
* ``judge``: run document → verdict (``judging.checks``, planted faults, baselines);
* ``package``: verdict → case result and its JUnit properties.

``run_and_check`` strings them together for a pytest session (the only step that reads the
session object); under ``--llmcomm-ab`` the A/B gate (``judging.ab``) runs the case instead.  The
case result (``documents.CaseResult``) is what reports and baselines are built from; it travels
from pytest-xdist workers to the controller as JSON (``documents.to_json``) inside the test report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from llmcomm_tests.analytic.e2e import predict_case
from llmcomm_tests.analytic.volume_frameworks import predict_for
from llmcomm_tests.core.documents import (FAIL, CaseResult, PredictedMetrics, PredictedOpClass, Prediction, RunDocument,
                                          Verdict, VerdictRow, VolumeRow)
from llmcomm_tests.frameworks.registry import adapter_for
from llmcomm_tests.judging.ab.gate import ABRequest
from llmcomm_tests.judging.baseline import BaselineRequest
from llmcomm_tests.judging.checks import evaluate, unconfirmed
from llmcomm_tests.report.trace import write_trace
from llmcomm_tests.runtime.faults import never_fired, parse_faults
from llmcomm_tests.runtime.launch import LaunchError
from llmcomm_tests.runtime.netns import ClusterError
from llmcomm_tests.runtime.run_config import RunConfig
from llmcomm_tests.suite.hardware_choice import ProfileChoice
from llmcomm_tests.suite.options import LLMCommOptions


@dataclass(frozen=True)
class CasePlan:
    """What a case will run and what it should cost."""

    cfg: "RunConfig"
    predicted: Prediction


def run_config(case, options: LLMCommOptions) -> "RunConfig":
    """The case's run under the session's options (repeats, records, planted faults)."""
    return RunConfig.for_case(case, repeats=options.repeats, keep_records=options.keep_records or options.trace,
                              inject=parse_faults(options.inject))


def prediction(case, profile) -> Prediction:
    # Each framework has its own volume pattern (docs/communication.md); latency stays ours.
    volume = predicted_volume(case)
    if profile is None:
        return Prediction(volume)
    doc = predict_case(case.engine, case.layout, case.batch, case.prompt_len, case.gen_len, case.dtype, profile)
    return Prediction(volume, [PredictedOpClass(**r) for r in doc["latency"]], PredictedMetrics(**doc["metrics"]))


def predicted_volume(case, tp_plan: dict | None = None) -> list[VolumeRow]:
    """The framework's volume model; ``tp_plan`` (what a transformers run reports) sets its embedding rule."""
    return [VolumeRow(**r) for r in predict_for(case.framework, case.engine, case.layout, case.batch,
                                                case.prompt_len, case.gen_len, case.dtype, tp_plan=tp_plan)]


def prepare(case, options: LLMCommOptions, hw: ProfileChoice) -> CasePlan:
    return CasePlan(run_config(case, options), prediction(case, hw.profile))


def execute(case, cfg: "RunConfig", *, backend: str, timeout_s: float, available_ranks: int, nodes=None) -> RunDocument:
    """Run ``cfg`` in the case's framework (``nodes``: a NodeLaunch, or None to fork ranks here).
    Raises ``LaunchError`` for ranks that failed or hung."""
    return adapter_for(case.framework).run(cfg, backend=backend, timeout_s=timeout_s,
                                           available_ranks=available_ranks, nodes=nodes)


def keep_trace(case, doc: RunDocument, report_dir: str, keep_records: bool) -> None:
    """The case's calls as a Chrome trace under ``report_dir``, written where the case ran: the
    records need not travel to the controller (dropped unless ``keep_records``)."""
    write_trace(doc, Path(report_dir) / "traces" / f"{case.spec_name}-{case.id}.json", str(case))
    if not keep_records:
        doc.records = None


def judge(case, doc: RunDocument, cfg: "RunConfig", predicted: Prediction, hw: ProfileChoice, *, backend: str,
          timed_cases: int, baseline: "BaselineRequest | None" = None, session_level: float = 0.05) -> Verdict:
    """The checks of one run: volume, latency, budgets (``judging.checks``), planted faults that
    fired nowhere, calls the backend never completed, and the baseline when one is asked for."""
    profile = hw.profile
    # A profile calibrates torch.distributed over a backend; another framework's own collectives
    # (vLLM's shared-memory all-reduce, …) are another transport: no bound from it.
    other = (None if adapter_for(case.framework).bounded_by_profile else
             f"{case.framework} runs its own collectives; profile {hw.name} calibrates torch.distributed on "
             f"{backend}: not bounded")
    # A case on a topology is judged by a profile of that cluster (both tiers, its nodes' own
    # transport), never by one calibrated on a single host: even inside one emulated node the calls
    # run far from cpu-loopback's model (docs/measurements.md#emulated-cluster).
    if case.topology is not None and profile is not None and profile.ranks_per_node != case.topology.ranks_per_node:
        other = (f"profile {hw.name} puts {profile.ranks_per_node} ranks on a node, the topology "
                 f"{case.topology.ranks_per_node}: not calibrated on this cluster (llmcomm cluster calibrate, then "
                 f"name the profile with hardware: or --llmcomm-hardware)")
    verdict = evaluate(case, doc, predicted.volume, profile, hw.name, no_latency=other, timed_cases=timed_cases,
                       session_level=session_level, off_host=hw.anchor)
    # A planted fault that matched no op on any rank planted nothing: a pass would prove nothing.
    if doc.faults_fired:  # our engine counts firings; a framework run plants through its own plugin
        verdict.rows += [VerdictRow("run", "inject", FAIL, detail=m) for m in never_fired(cfg.inject, doc.faults_fired, case.id)]
    # A backend that completed no Work for a call leaves it untimed: say so, never drop its row.
    for rank, missing in enumerate(doc.no_completion):
        verdict.rows += [VerdictRow("latency", f"{name} (rank {rank})", FAIL, n=count,
                                    detail="the backend returned no completion for these calls: they were not timed")
                         for name, count in sorted(missing.items())]
    if baseline is not None and baseline.wanted:
        from llmcomm_tests.judging.baseline import handle

        verdict.rows += handle(case, doc, baseline)
    return verdict


def package(case, hw: ProfileChoice, backend: str, env: dict, predicted: Prediction, doc: RunDocument,
            verdict: Verdict, reprobe=None) -> CaseResult:
    """The case result of a run and its verdict, with the JUnit properties dashboards read."""
    result = CaseResult(case.spec_name, str(case.path), case.id, hw.name, backend, env, predicted, verdict,
                        hardware_how=hw.how, run=doc, anchor=hw.anchor, reprobe=reprobe)
    result.properties = [("llmcomm.hardware", f"{hw.name} ({hw.how})")] + properties(doc, predicted, verdict)
    if hw.anchor is not None:
        result.properties.append(("llmcomm.host_anchor", hw.anchor.describe()))
    if reprobe is not None:
        result.properties.append(("llmcomm.host_anchor_reprobe", reprobe.describe()))
    return result


def failed_result(case, hardware: str, backend: str, env: dict, predicted: Prediction, row: VerdictRow,
                  error: str, hardware_how: str = "") -> CaseResult:
    """A case that could not run: one failed row and its error (no run document)."""
    result = CaseResult(case.spec_name, str(case.path), case.id, hardware, backend, env, predicted,
                        Verdict(case.id, [row]), hardware_how=hardware_how)
    result.error, result.properties = error, [("llmcomm.error", error[:2000])]
    return result


# -- the pytest session's pipeline ----------------------------------------------------------------


def baseline_request(state) -> "BaselineRequest":
    o = state.options
    return BaselineRequest(o.baseline_dir, o.baseline_compare, o.baseline_save, state.env, state.session_id,
                           state.levels.baseline_case)


def ab_request(state) -> "ABRequest":
    o = state.options
    return ABRequest(o.ab, o.ab_pairs, o.ab_seed, state.backend, o.timeout, state.ranks, state.resources,
                     state.levels.ab_case)


def run_and_check(case, state) -> CaseResult:
    """One case of a pytest session (``state``: its ``LLMCommSession``), prepared, run, judged and packaged."""
    options = state.options
    if options.ab:  # the A/B gate runs the case in both environments instead (judging/ab)
        from llmcomm_tests.judging.ab.result import case_result

        plan = prepare(case, options, state.profile_for(case))
        return case_result(case, plan.predicted, plan.cfg, ab_request(state), hardware=state.hardware, env=state.env)
    try:
        hw = state.profile_for(case)  # --llmcomm-hardware, else the spec's hardware:, else the machine's
    except ValueError as exc:  # the spec names no known profile: a failed case, never n/a rows
        return failed_result(case, case.hardware, state.backend, state.env, prediction(case, None),
                             VerdictRow("run", "hardware", FAIL, detail=str(exc)), str(exc))
    if case.topology is None and adapter_for(case.framework).bounded_by_profile:
        hw = state.anchored(hw)  # is this the calibration host? ops it runs outside their band: n/a
    plan = prepare(case, options, hw)

    def failed(check: str, detail: str, error: str) -> CaseResult:
        return failed_result(case, hw.name, state.backend, state.env, plan.predicted,
                             VerdictRow("run", check, FAIL, detail=detail), error, hw.how)

    try:
        nodes = state.node_launch_for(case)  # None: ranks forked on this host
    except ClusterError as exc:
        return failed("nodes", str(exc), str(exc))
    try:
        doc = execute(case, plan.cfg, backend=state.backend, timeout_s=options.timeout,
                      available_ranks=state.ranks, nodes=nodes)
    except LaunchError as exc:
        return failed("launch", str(exc).splitlines()[0], str(exc))
    if doc.framework and doc.framework.get("tp_plan") is not None:  # transformers: its plan's embedding rule
        plan.predicted.volume = predicted_volume(case, doc.framework["tp_plan"])
    if options.trace:
        keep_trace(case, doc, options.report_dir, options.keep_records)
    verdict = judge(case, doc, plan.cfg, plan.predicted, hw, backend=state.backend, timed_cases=state.timed_cases,
                    baseline=baseline_request(state), session_level=state.levels.latency)
    reprobe = None
    if hw.anchor is not None and not hw.anchor.error and any(r.check == "latency" for r in verdict.failed):
        # the session's probe ran before this case: was the host still inside its calibration?
        reprobe = state.reprobed(hw, after=case.id)
        if not reprobe.error:
            verdict.rows = unconfirmed(verdict.rows, doc.ops, reprobe)
    return package(case, hw, state.backend, state.env, plan.predicted, doc, verdict, reprobe)


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
