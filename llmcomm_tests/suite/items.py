"""pytest nodes: a spec file is a collector, each (layout × workload) case an item."""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest

from llmcomm_tests.frameworks.registry import adapter_for
from llmcomm_tests.report.table import format_table
from llmcomm_tests.runtime.netns import can_create_namespaces
from llmcomm_tests.spec import SpecError, load_spec
from llmcomm_tests.suite.case_run import run_and_check
from llmcomm_tests.suite.session import SESSION_KEY


class SpecFile(pytest.File):
    def collect(self):
        state = self.config.stash[SESSION_KEY]
        try:
            spec = load_spec(self.path)
            state.spec_names.claim(spec)
        except SpecError as exc:
            raise SpecCollectError(str(exc)) from None
        spec = replace(spec, topology=state.topology_for(spec))
        for case in spec.cases():
            item = CaseItem.from_parent(self, name=case.id, case=case)
            for marker in _markers(case):
                item.add_marker(marker)
            yield item

    def repr_failure(self, excinfo):
        if isinstance(excinfo.value, SpecCollectError):
            return str(excinfo.value)  # file:line: field: message — no traceback
        return super().repr_failure(excinfo)


class SpecCollectError(Exception):
    pass


def _markers(case) -> list:
    kind = case.layout.kind
    marks = [pytest.mark.llmcomm, pytest.mark.gpus(case.world_size)]
    if kind in ("tp", "pp", "hybrid"):
        marks.append(getattr(pytest.mark, kind))
    marks += [getattr(pytest.mark, m) for m in case.marks]
    if case.xfail:  # a fix of the known failure turns the case into a visible XPASS (strict: a failure)
        marks.append(pytest.mark.xfail(reason=case.xfail, strict=True))
    return marks


class CaseFailure(Exception):
    """A case whose checks failed: carries the verdict table."""

    def __init__(self, summary: str, table: str):
        super().__init__(summary)
        self.summary, self.table = summary, table


class CaseItem(pytest.Item):
    def __init__(self, *, case, **kwargs):
        super().__init__(**kwargs)
        self.case = case
        self.llmcomm_result = None  # documents.CaseResult once run

    @property
    def session_state(self):
        return self.config.stash[SESSION_KEY]

    def setup(self):
        reason = skip_reason(self.case, self.session_state)
        if reason:  # reported at the spec's line, not at this call
            raise pytest.skip.Exception(reason, _use_item_location=True)

    def runtest(self):
        result = run_and_check(self.case, self.session_state)
        self.llmcomm_result = result
        # The model the rows were judged against, when this host's probe rescaled it: next to the numbers
        note = "".join(f"{a.describe()}\n" for a in (result.anchor, result.reprobe) if a is not None)
        table = note + format_table(result.verdict.rows)
        self.add_report_section("call", "llmcomm", table)
        self.user_properties.extend(result.properties)
        if result.error:
            raise CaseFailure(result.error, table)
        if not result.verdict.passed:
            failed = result.verdict.failed
            raise CaseFailure(f"{len(failed)} check(s) failed", note + format_table(failed))

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, CaseFailure):
            exc = excinfo.value
            return f"{self.case.spec_name}[{self.case.id}]: {exc.summary}\n\n{exc.table}"
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        return self.path, self.case.line - 1 if self.case.line else None, f"{self.case.spec_name}::{self.case.id}"


def judges_timing(item, state) -> bool:
    """Whether this item is a case that will run here with latency rows: one whose framework's
    collectives a profile bounds (our engine's; not another framework's own transport)."""
    case = getattr(item, "case", None)
    return case is not None and adapter_for(case.framework).bounded_by_profile and skip_reason(case, state) is None


def runs_here(item, state) -> bool:
    """Whether this item is a case that will run here (its baseline or A/B rows are judged)."""
    case = getattr(item, "case", None)
    return case is not None and skip_reason(case, state) is None


def skip_reason(case, state) -> str | None:
    """Why a case cannot run here (or None)."""
    reason = adapter_for(case.framework).missing()
    if reason:
        return reason
    if case.topology is not None:
        reason = _topology_skip(case, state.backend)
        if reason:
            return reason
    required = case.requires.backend
    if required and required != state.backend:
        return (f"needs backend {required} (requires.backend in {case.path.name}); this run uses {state.backend}"
                + (" on CPU" if state.backend == "gloo" else ""))
    if case.requires.gpus and case.requires.gpus > state.ranks:
        return f"needs {case.requires.gpus} GPUs (requires.gpus); {state.ranks} available: {state.ranks_reason}"
    if case.world_size > state.ranks:
        return f"needs {case.world_size} ranks (tp {case.layout.tp} x pp {case.layout.pp}); {state.ranks} available: {state.ranks_reason}"
    return None


def _topology_skip(case, backend: str) -> str | None:
    t = case.topology
    if case.world_size > t.world_size:
        return (f"needs {case.world_size} ranks (tp {case.layout.tp} x pp {case.layout.pp}); the topology has "
                f"{t.nodes} nodes x {t.ranks_per_node} ranks ({t.where})")
    if t.emulate and backend == "nccl":
        return ("emulated nodes are not run on NCCL: the nodes would share this host's GPUs (NCCL refuses two "
                "ranks on one GPU, \"Duplicate GPU detected\") and NCCL's NVLink/shared-memory transports bypass "
                "the shaped link; run them with --llmcomm-backend gloo")
    if t.emulate:
        ok, why = _namespaces_here()
        if not ok:
            return f"emulated nodes need network namespaces, unavailable here: {why}"
    return None


@functools.lru_cache(maxsize=1)
def _namespaces_here() -> tuple[bool, str]:
    return can_create_namespaces()  # a probe namespace per call: once per process is enough
