"""The typed spec: :class:`Spec`, its :class:`Case` (one layout × one workload), budgets,
tolerances, the located :class:`SpecError`, and the constants a spec may name.  No torch."""

from __future__ import annotations

import functools
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from llmcomm_tests.spec.topology import Topology
from llmcomm_tests.core.contract import BUDGET_OPS
from llmcomm_tests.engine.config import DTYPE_BYTES, EngineShape
from llmcomm_tests.engine.layout import Layout

SCHEMA_PATH = Path(__file__).parent / "schema" / "slo-spec.schema.json"

DEFAULT_HARDWARE = "cpu-loopback"
DEFAULT_REPEATS = 5
DEFAULT_WARMUP = 1
DEFAULT_INSIDE_FRACTION = 0.9
DEFAULT_SLACK = 0.0

# Op classes a per-op budget or tolerance may name (torch.distributed call names).
OP_CLASSES = BUDGET_OPS
# Budgets on a time distribution (seconds), in document order of the schema.
DURATION_METRICS = ("ttft", "tpot", "itl", "e2e", "comm_time_per_token", "wait_per_token")
BUDGET_METRICS = DURATION_METRICS + ("comm_share", "bytes_per_token", "op_latency")

# MLPerf Inference LoadGen SLOs, p99 in seconds (the benchmarks' published server / interactive limits).
SLO_PRESETS: dict[str, dict[str, float]] = {
    "mlperf-llama2-70b-server": {"ttft": 2.0, "tpot": 0.200},
    "mlperf-llama2-70b-interactive": {"ttft": 0.450, "tpot": 0.040},
    "mlperf-llama3.1-8b-server": {"ttft": 2.0, "tpot": 0.100},
    "mlperf-llama3.1-8b-interactive": {"ttft": 0.500, "tpot": 0.030},
    "mlperf-llama3.1-405b-server": {"ttft": 6.0, "tpot": 0.175},
    "mlperf-llama3.1-405b-interactive": {"ttft": 4.5, "tpot": 0.080},
}


@functools.lru_cache(maxsize=1)
def spec_schema() -> dict:
    """The published JSON Schema (Draft 2020-12) of a spec file."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
# Errors


def _display_path(path: "str | os.PathLike[str]") -> str:
    """The path as given; an absolute path below the working directory is shown relative to it."""
    p = Path(path)
    if p.is_absolute():
        try:
            return str(p.relative_to(Path.cwd()))
        except ValueError:
            pass
    return str(path)


class SpecError(ValueError):
    """One problem in one spec file, located: ``"<path>:<line>: <field>: <message>"``.

    ``line`` is 1-based (None when the file could not be read); ``field`` is the dotted path of the
    offending node (``"layouts[1].tp"``), or None for problems of the file as a whole.
    """

    def __init__(self, path: "str | os.PathLike[str]", line: int | None, field: str | None, message: str):
        self.path = _display_path(path)
        self.line = line
        self.field = field or None
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"

    def __reduce__(self):  # keep it picklable (pytest-xdist ships exceptions between processes)
        return (type(self), (self.path, self.line, self.field, self.message))


# --------------------------------------------------------------------------------------------
# Typed result


@dataclass(frozen=True)
class Workload:
    batch: int
    prompt_len: int
    gen_len: int


@dataclass(frozen=True)
class Budget:
    """One SLO budget.  ``metric`` is one of :data:`BUDGET_METRICS`; ``op`` is set for op_latency.

    Times are in seconds, comm_share a fraction, bytes_per_token bytes (bound in ``max``).
    ``hardware`` is what the budget was written for; None for counted (hardware-free) metrics.
    """

    metric: str
    p50: float | None = None
    p99: float | None = None
    max: float | None = None
    hardware: str | None = None
    op: str | None = None
    line: int = field(default=0, compare=False)

    @property
    def key(self) -> str:
        """``"ttft"``, or ``"op_latency.all_reduce"``."""
        return f"{self.metric}.{self.op}" if self.op else self.metric

    @property
    def unit(self) -> str:
        if self.metric == "comm_share":
            return "fraction"
        if self.metric == "bytes_per_token":
            return "bytes"
        return "s"

    def applies_to(self, hardware: str) -> bool:
        """Whether the budget can be judged on ``hardware`` (else: report it as not applicable)."""
        return self.hardware is None or self.hardware == hardware


@dataclass(frozen=True)
class Budgets:
    """The budgets block: the hardware it declares, an optional SLO preset, and the budgets."""

    items: tuple[Budget, ...] = ()
    hardware: str | None = None
    preset: str | None = None

    def __iter__(self) -> Iterator[Budget]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def get(self, metric: str, op: str | None = None) -> Budget | None:
        for budget in self.items:
            if budget.metric == metric and budget.op == op:
                return budget
        return None

    def applicable(self, hardware: str) -> tuple[Budget, ...]:
        return tuple(b for b in self.items if b.applies_to(hardware))

    def not_applicable(self, hardware: str) -> tuple[Budget, ...]:
        return tuple(b for b in self.items if not b.applies_to(hardware))


@dataclass(frozen=True)
class LatencyTolerance:
    """How closely an op class's transfers must follow the profile: ``slack`` widens the band
    around the model that the median must overlap, ``tail_slack`` (default: ``slack``) the tail
    allowance, under which ``inside_fraction`` of the transfers must fall.  Two margins, since the
    centre measures the model and the tail the host's scheduling."""

    inside_fraction: float = DEFAULT_INSIDE_FRACTION
    slack: float = DEFAULT_SLACK
    per_op: tuple[tuple[str, "LatencyTolerance"], ...] = ()
    tail_slack: float | None = None

    @property
    def tail_margin(self) -> float:
        return self.slack if self.tail_slack is None else self.tail_slack

    def for_op(self, op: str) -> "LatencyTolerance":
        """The tolerance for one op class (its per_op override, else this one)."""
        for name, tol in self.per_op:
            if name == op:
                return tol
        return LatencyTolerance(self.inside_fraction, self.slack, tail_slack=self.tail_slack)


@dataclass(frozen=True)
class Tolerances:
    latency: LatencyTolerance = LatencyTolerance()


@dataclass(frozen=True)
class Baseline:
    """Regression gate settings (relative changes)."""

    threshold: float
    min_detectable: float | None = None
    metrics: tuple[str, ...] = ()  # empty: every budgeted metric
    file: str | None = None


@dataclass(frozen=True)
class Requires:
    gpus: int = 0
    backend: str | None = None  # "gloo" | "nccl" | None (any)


@dataclass(frozen=True)
class Case:
    """One layout × one workload of a spec: the unit a test runs."""

    spec_name: str
    path: Path
    engine: EngineShape
    dtype: str
    layout: Layout
    batch: int
    prompt_len: int
    gen_len: int
    repeats: int = DEFAULT_REPEATS
    warmup: int = DEFAULT_WARMUP
    hardware: str = DEFAULT_HARDWARE
    hardware_given: bool = False  # the spec names it (else the machine's own profile is used)
    budgets: Budgets = Budgets()
    tolerances: Tolerances = Tolerances()
    baseline: Baseline | None = None
    requires: Requires = Requires()
    marks: tuple[str, ...] = ()
    line: int = field(default=0, compare=False)  # line of the case's layout entry
    framework: str = "ours"  # whose engine runs it: ours | vllm | transformers
    xfail: str | None = None  # a known failure of this layout (its reason): run as xfail(strict=True)
    topology: Topology | None = None  # ranks on several nodes (emulated or real); None: one host
    inter_rate: str | None = None  # emulated nodes: this case's shaped inter-node link rate

    @property
    def id(self) -> str:
        rate = f"-{self.inter_rate}" if self.inter_rate else ""
        return f"{self.layout}-b{self.batch}-s{self.prompt_len}-g{self.gen_len}{rate}"

    @property
    def multi_node(self) -> bool:
        """Whether the case's ranks span more than one node (the node launcher starts them)."""
        return self.topology is not None and self.world_size > self.topology.ranks_per_node

    @property
    def world_size(self) -> int:
        return self.layout.world_size

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES[self.dtype]

    @property
    def workload(self) -> Workload:
        return Workload(self.batch, self.prompt_len, self.gen_len)

    def __str__(self) -> str:
        return f"{self.spec_name}[{self.id}]"


@dataclass(frozen=True)
class Spec:
    path: Path
    name: str
    engine: EngineShape
    dtype: str
    workloads: tuple[Workload, ...]
    layouts: tuple[Layout, ...]
    repeats: int = DEFAULT_REPEATS
    warmup: int = DEFAULT_WARMUP
    hardware: str = DEFAULT_HARDWARE
    hardware_given: bool = False  # `hardware:` written in the spec, not the default
    tolerances: Tolerances = Tolerances()
    budgets: Budgets = Budgets()
    baseline: Baseline | None = None
    requires: Requires = Requires()
    marks: tuple[str, ...] = ()
    description: str = ""
    framework: str = "ours"
    xfails: tuple[tuple[int, str], ...] = ()  # (layout index, the known failure's reason)
    topology: Topology | None = None
    # field path ("layouts[1].tp", "budgets.ttft.p99") -> 1-based line, for messages that point back.
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, field_path: str | None) -> int:
        """Line of a field, or of its nearest enclosing field that has one (1 if none)."""
        f = field_path or ""
        while f not in self.lines:
            if not f:
                return 1
            f = _parent_field(f)
        return self.lines[f]

    def error(self, field_path: str | None, message: str) -> SpecError:
        """A SpecError located at ``field_path`` of this spec (for the plugin's own checks)."""
        return SpecError(self.path, self.line_of(field_path or ""), field_path, message)

    def cases(self) -> list[Case]:
        """Layouts × workloads × emulated link rates (layout-major), refusing two cases with the same id."""
        out: list[Case] = []
        seen: dict[str, int] = {}
        rates = (self.topology.inter_rates or (None,)) if self.topology and self.topology.emulate else (None,)
        for (i, layout), w, rate in itertools.product(enumerate(self.layouts), self.workloads, rates):
            line = self.lines.get(f"layouts[{i}]", 0)
            case = Case(
                spec_name=self.name, path=self.path, engine=self.engine, dtype=self.dtype,
                layout=layout, batch=w.batch, prompt_len=w.prompt_len, gen_len=w.gen_len,
                repeats=self.repeats, warmup=self.warmup, hardware=self.hardware,
                hardware_given=self.hardware_given,
                budgets=self.budgets, tolerances=self.tolerances, baseline=self.baseline,
                requires=self.requires, marks=self.marks, line=line, framework=self.framework,
                xfail=dict(self.xfails).get(i), topology=self.topology, inter_rate=rate,
            )
            if case.id in seen:
                raise SpecError(
                    self.path, line or None, f"layouts[{i}]",
                    f"duplicate case id {case.id} (layout {layout} already listed at line {seen[case.id]})",
                )
            seen[case.id] = line
            out.append(case)
        return out


def _parent_field(f: str) -> str:
    """``"layouts[1].tp"`` → ``"layouts[1]"`` → ``"layouts"`` → ``""``."""
    m = re.match(r"^(.*?)(\[\d+\]|\.[^.\[\]]*)$", f)
    return m.group(1) if m else ""


