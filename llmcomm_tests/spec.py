"""SLO specs: ``slo_specs/*.yaml`` → typed :class:`Spec` → one :class:`Case` per layout × workload.

Loading is strict and points at the offending line: every problem is one :class:`SpecError` whose
``str()`` reads ``"slo_specs/x.yaml:12: layouts[1].tp: tp=3 does not divide 8 attention heads"``.

Three passes:

1. YAML → plain data, keeping the line of every node (safe: only plain YAML types; ``!!python/...``
   and other tags are refused, as are duplicate keys and non-string keys).
2. Structure against ``schema/slo-spec.schema.json`` (JSON Schema 2020-12, also published for
   editors); a schema error is mapped back to the line of the node it is about.
3. Meaning: the engine shape resolves, each layout fits it (:meth:`Layout.validate`), durations and
   byte counts parse and are positive, p50 <= p99, no two cases share an id, ...

The format is documented in ``docs/spec-format.md``.  This module must not import torch.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml

from .engine.config import DTYPE_BYTES, EngineShape, resolve_engine
from .engine.layout import Layout, LayoutError

__all__ = [
    "SpecError",
    "Spec",
    "Case",
    "Workload",
    "Budget",
    "Budgets",
    "Tolerances",
    "LatencyTolerance",
    "Baseline",
    "Requires",
    "load_spec",
    "load_specs",
    "parse_spec",
    "parse_duration",
    "parse_bytes",
    "spec_schema",
    "SCHEMA_PATH",
    "OP_CLASSES",
    "DURATION_METRICS",
    "BUDGET_METRICS",
    "SLO_PRESETS",
    "DEFAULT_HARDWARE",
]

SCHEMA_PATH = Path(__file__).parent / "schema" / "slo-spec.schema.json"

DEFAULT_HARDWARE = "cpu-loopback"
DEFAULT_REPEATS = 5
DEFAULT_WARMUP = 1
DEFAULT_INSIDE_FRACTION = 0.9
DEFAULT_SLACK = 0.0

# Op classes a per-op budget or tolerance may name (torch.distributed call names).
OP_CLASSES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "gather", "send", "recv")
# Budgets on a time distribution (seconds), in document order of the schema.
DURATION_METRICS = ("ttft", "tpot", "itl", "e2e", "comm_time_per_token")
BUDGET_METRICS = DURATION_METRICS + ("comm_share", "bytes_per_token", "op_latency")
# Metrics that need at least one decode step (gen_len >= 2).
_DECODE_METRICS = ("tpot", "itl")

# MLPerf Inference LoadGen SLOs, p99 in seconds (DOMAIN.md §7).
SLO_PRESETS: dict[str, dict[str, float]] = {
    "mlperf-llama2-70b-server": {"ttft": 2.0, "tpot": 0.200},
    "mlperf-llama2-70b-interactive": {"ttft": 0.450, "tpot": 0.040},
    "mlperf-llama3.1-8b-server": {"ttft": 2.0, "tpot": 0.100},
    "mlperf-llama3.1-8b-interactive": {"ttft": 0.500, "tpot": 0.030},
    "mlperf-llama3.1-405b-server": {"ttft": 6.0, "tpot": 0.175},
    "mlperf-llama3.1-405b-interactive": {"ttft": 4.5, "tpot": 0.080},
}


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
    """Share of an op class's samples that must fall inside the analytic bounds, widened by slack."""

    inside_fraction: float = DEFAULT_INSIDE_FRACTION
    slack: float = DEFAULT_SLACK
    per_op: tuple[tuple[str, "LatencyTolerance"], ...] = ()

    def for_op(self, op: str) -> "LatencyTolerance":
        """The tolerance for one op class (its per_op override, else this one)."""
        for name, tol in self.per_op:
            if name == op:
                return tol
        return LatencyTolerance(self.inside_fraction, self.slack)

    def inside(self, t: float, lower: float, upper: float) -> bool:
        return lower * max(0.0, 1.0 - self.slack) <= t <= upper * (1.0 + self.slack)


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
    budgets: Budgets = Budgets()
    tolerances: Tolerances = Tolerances()
    baseline: Baseline | None = None
    requires: Requires = Requires()
    marks: tuple[str, ...] = ()
    line: int = field(default=0, compare=False)  # line of the case's layout entry

    @property
    def id(self) -> str:
        return f"{self.layout}-b{self.batch}-s{self.prompt_len}-g{self.gen_len}"

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
    tolerances: Tolerances = Tolerances()
    budgets: Budgets = Budgets()
    baseline: Baseline | None = None
    requires: Requires = Requires()
    marks: tuple[str, ...] = ()
    description: str = ""
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
        """Layouts × workloads (layout-major), refusing two cases with the same id."""
        out: list[Case] = []
        seen: dict[str, int] = {}
        for i, layout in enumerate(self.layouts):
            line = self.lines.get(f"layouts[{i}]", 0)
            for w in self.workloads:
                case = Case(
                    spec_name=self.name, path=self.path, engine=self.engine, dtype=self.dtype,
                    layout=layout, batch=w.batch, prompt_len=w.prompt_len, gen_len=w.gen_len,
                    repeats=self.repeats, warmup=self.warmup, hardware=self.hardware,
                    budgets=self.budgets, tolerances=self.tolerances, baseline=self.baseline,
                    requires=self.requires, marks=self.marks, line=line,
                )
                if case.id in seen:
                    raise SpecError(
                        self.path, line or None, f"layouts[{i}]",
                        f"duplicate case id {case.id} (layout {layout} already listed at line {seen[case.id]})",
                    )
                seen[case.id] = line
                out.append(case)
        return out


# --------------------------------------------------------------------------------------------
# Durations and byte counts

_DURATION_RE = re.compile(r"^\s*((?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*(ns|us|µs|ms|s)\s*$")
_DURATION_PER_SECOND = {"ns": 1e9, "us": 1e6, "µs": 1e6, "ms": 1e3, "s": 1.0}
_BYTES_RE = re.compile(r"^\s*((?:[0-9]+\.?[0-9]*|\.[0-9]+))\s*(B|kB|KB|KiB|MB|MiB|GB|GiB)\s*$")
_BYTES_UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "KiB": 2**10, "MB": 1e6, "MiB": 2**20, "GB": 1e9, "GiB": 2**30}


def parse_duration(value: "float | int | str") -> float:
    """Seconds from a number of seconds or a string such as ``"200ms"``, ``"2 s"``, ``"1.5s"``.

    Raises ValueError for anything else, and for durations that are not positive and finite.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {_describe(value)}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if not m:
            raise ValueError(
                f"cannot parse duration {value!r}: use seconds or a unit (ns, us, ms, s) such as '200ms'"
            )
        seconds = float(m.group(1)) / _DURATION_PER_SECOND[m.group(2)]
    else:
        raise ValueError(f"expected a duration, got {_describe(value)}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def parse_bytes(value: "float | int | str") -> float:
    """Bytes from a number or a string such as ``"64 KiB"``, ``"1.5MB"``; positive only."""
    if isinstance(value, bool):
        raise ValueError(f"expected a byte count, got {_describe(value)}")
    if isinstance(value, (int, float)):
        n = float(value)
    elif isinstance(value, str):
        m = _BYTES_RE.match(value)
        if not m:
            raise ValueError(f"cannot parse byte count {value!r}: use a unit (B, kB, KiB, MB, MiB, GB, GiB)")
        n = float(m.group(1)) * _BYTES_UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a byte count, got {_describe(value)}")
    if not (math.isfinite(n) and n > 0):
        raise ValueError(f"byte count must be positive, got {value!r}")
    return n


def _fmt_seconds(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:g} {unit}"
    return f"{s / 1e-9:g} ns"


def _fmt_value(metric: str, v: float) -> str:
    if metric == "comm_share":
        return f"{v:g}"
    if metric == "bytes_per_token":
        return f"{v:g} B"
    return _fmt_seconds(v)


# --------------------------------------------------------------------------------------------
# Pass 1: YAML with lines

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null")}
_MAX_NODES = 100_000  # aliases can blow a small file up; specs are small


class _LineLoader(yaml.SafeLoader):
    """SafeLoader without implicit timestamps (a date-like value stays a string).

    Only composes; :class:`_Doc` builds the data and records each node's start line.
    """

    yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag != _CORE + "timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


Key = tuple  # a node's path: keys (str) and list indices (int)


def _field(path: Key) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _parent_field(f: str) -> str:
    """``"layouts[1].tp"`` → ``"layouts[1]"`` → ``"layouts"`` → ``""``."""
    m = re.match(r"^(.*?)(\[\d+\]|\.[^.\[\]]*)$", f)
    return m.group(1) if m else ""


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag


class _Doc:
    """Plain data of one YAML document plus the line of every node, by path."""

    def __init__(self, display: str):
        self.display = display
        self.value_line: dict[Key, int] = {}  # where the node starts
        self.key_line: dict[Key, int] = {}  # where its key (or list item) starts
        self.collections: set[Key] = set()
        self._count = 0
        self._loader: _LineLoader | None = None
        self.data: Any = None

    @classmethod
    def parse(cls, text: str, display: str) -> "_Doc":
        doc = cls(display)
        try:
            loader = doc._loader = _LineLoader(text)  # the reader checks characters here already
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            what = exc.problem or exc.context or "invalid YAML"
            if exc.context and exc.problem:
                ctx_line = f" at line {exc.context_mark.line + 1}" if exc.context_mark else ""
                if exc.problem.startswith("but "):  # "expected a single document ..., but found ..."
                    what = f"{exc.context}{ctx_line}, {exc.problem}"
                else:
                    what = f"{exc.problem} ({exc.context}{ctx_line})"
            raise SpecError(display, mark.line + 1 if mark else 1, None, f"YAML syntax error: {what}") from None
        except yaml.reader.ReaderError as exc:  # a character YAML does not allow
            line = text.count("\n", 0, exc.position) + 1
            what = f"{exc.reason} (character #x{exc.character:04x})"
            raise SpecError(display, line, None, f"YAML error: {what}") from None
        try:
            if node is None:
                raise SpecError(display, 1, None,
                                "empty spec: expected a mapping with name, engine, workload and layouts")
            doc.data = doc._build(node, ())
        finally:
            loader.dispose()
            doc._loader = None
        return doc

    def _err(self, node: yaml.Node, path: Key, message: str) -> SpecError:
        return SpecError(self.display, node.start_mark.line + 1, _field(path), message)

    def _bad_tag(self, node: yaml.Node, path: Key) -> SpecError:
        return self._err(node, path, f"unsupported YAML tag {_short_tag(node.tag)!r}: specs hold plain data only")

    def _build(self, node: yaml.Node, path: Key) -> Any:
        self._count += 1
        if self._count > _MAX_NODES:
            raise self._err(node, path, f"spec too large (more than {_MAX_NODES} YAML nodes)")
        self.value_line[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            if node.tag != _CORE + "map":
                raise self._bad_tag(node, path)
            self.collections.add(path)
            out: dict[str, Any] = {}
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _CORE + "merge":
                    raise self._err(key_node, path, "YAML merge keys (<<) are not supported")
                if not isinstance(key_node, yaml.ScalarNode):
                    raise self._err(key_node, path, "mapping keys must be plain strings")
                key = self._build_scalar(key_node, path)
                if not isinstance(key, str):
                    raise self._err(key_node, path, f"mapping key {key_node.value} is {_kind(key)}, not a string; "
                                                    f"quote it")
                line = key_node.start_mark.line + 1
                if key in first_line:
                    raise SpecError(self.display, line, _field(path + (key,)),
                                    f"duplicate key (first given at line {first_line[key]})")
                first_line[key] = line
                self.key_line[path + (key,)] = line
                out[key] = self._build(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _CORE + "seq":
                raise self._bad_tag(node, path)
            self.collections.add(path)
            items = []
            for i, item in enumerate(node.value):
                self.key_line[path + (i,)] = item.start_mark.line + 1
                items.append(self._build(item, path + (i,)))
            return items
        return self._build_scalar(node, path)

    def _build_scalar(self, node: yaml.Node, path: Key) -> Any:
        if node.tag not in _SCALAR_TAGS:
            raise self._bad_tag(node, path)
        value = self._loader.construct_object(node, deep=True)
        if isinstance(value, float) and not math.isfinite(value):
            raise self._err(node, path, f"expected a finite number, got {node.value}")
        return value

    def line(self, path: Key) -> int:
        """Line for an error about the node at ``path`` (or its nearest existing ancestor).

        A scalar points at itself; a mapping or list at its key (its first line may be the next one).
        """
        path = tuple(path)
        while path and path not in self.value_line:
            path = path[:-1]
        if path in self.collections and path in self.key_line:
            return self.key_line[path]
        return self.value_line.get(path, 1)

    def field_lines(self) -> dict[str, int]:
        return {_field(p): self.line(p) for p in self.value_line}


# --------------------------------------------------------------------------------------------
# Pass 2: schema


@functools.lru_cache(maxsize=1)
def spec_schema() -> dict:
    """The published JSON Schema (Draft 2020-12) of a spec file."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=1)
def _validator():
    import jsonschema  # late: only needed when a spec is loaded
    from jsonschema import validators

    base = jsonschema.Draft202012Validator
    # YAML's 2.0 is a float: an integer field wants an int (jsonschema would accept 2.0).
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _checker, v: isinstance(v, int) and not isinstance(v, bool)
    )
    strict = validators.extend(base, type_checker=checker)
    return strict(spec_schema())


_TYPE_WORDS = {
    "integer": "an integer", "number": "a number", "string": "a string", "object": "a mapping",
    "array": "a list", "boolean": "true or false", "null": "null",
}
_JSON_TYPES = {"integer": int, "number": (int, float), "string": str, "object": dict, "array": list,
               "boolean": bool, "null": type(None)}


def _describe(v: Any) -> str:
    if isinstance(v, bool):
        return f"{'true' if v else 'false'} (a boolean)"
    if v is None:
        return "null"
    if isinstance(v, str):
        return f"{v!r} (a string)"
    if isinstance(v, float):
        return f"{v!r} (a float)"
    if isinstance(v, int):
        return f"{v}"
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    return type(v).__name__


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if v is None:
        return "null"
    return {int: "an integer", float: "a float", str: "a string", dict: "a mapping", list: "a list"}.get(
        type(v), type(v).__name__)


def _matches_type(schema: Any, v: Any) -> bool:
    """Whether ``v`` has the (top-level) type a schema branch wants; True if it names none."""
    if not isinstance(schema, dict) or "type" not in schema:
        if isinstance(schema, dict) and "$ref" in schema:
            return _matches_type(_resolve_ref(schema["$ref"]), v)
        return True
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    for t in types:
        if t == "integer" and isinstance(v, int) and not isinstance(v, bool):
            return True
        if t == "number" and isinstance(v, (int, float)) and not isinstance(v, bool):
            return True
        if t in ("integer", "number") or (isinstance(v, bool) and t != "boolean"):
            continue
        if isinstance(v, _JSON_TYPES[t]):
            return True
    return False


def _resolve_ref(ref: str) -> Any:
    node: Any = spec_schema()
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _branch_types(schema: Any) -> list[str]:
    if isinstance(schema, dict) and "$ref" in schema:
        return _branch_types(_resolve_ref(schema["$ref"]))
    if isinstance(schema, dict) and "type" in schema:
        t = schema["type"]
        return list(t) if isinstance(t, list) else [t]
    if isinstance(schema, dict) and "anyOf" in schema:
        return [t for s in schema["anyOf"] for t in _branch_types(s)]
    return []


def _schema_error(doc: _Doc, error) -> SpecError:
    """One jsonschema error (possibly an anyOf with sub-errors) → one located SpecError."""
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    v, kind, value = error.validator, error.validator_value, error.instance
    xmsg = schema.get("x-message")
    if v in ("anyOf", "oneOf"):
        if xmsg:
            got = "" if isinstance(value, (dict, list)) else f"; got {_describe(value)}"
            return SpecError(doc.display, doc.line(path), _field(path), f"{xmsg}{got}")
        branches = [s for s in kind if _matches_type(s, value)]
        if branches:
            index = kind.index(branches[0])
            sub = [e for e in error.context if e.relative_schema_path and e.relative_schema_path[0] == index]
            if sub:
                return _pick([_schema_error(doc, e) for e in sub])
        wanted = []
        for t in _branch_types({"anyOf": kind}):
            if t not in wanted:
                wanted.append(t)
        words = " or ".join(_TYPE_WORDS[t] if t != "array" else "a list of them" for t in wanted)
        return SpecError(doc.display, doc.line(path), _field(path), f"expected {words}, got {_describe(value)}")
    if v == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        extra = [k for k in value if k not in allowed]
        key = min(extra, key=lambda k: doc.line(path + (k,)))
        hint = difflib.get_close_matches(key, allowed, n=1)
        msg = f"unknown field; did you mean {hint[0]!r}?" if hint else "unknown field"
        err = SpecError(doc.display, doc.line(path + (key,)), _field(path + (key,)),
                        f"{msg} (allowed: {', '.join(allowed)})")
        err._unknown_in = path
        return err
    if v == "required":
        missing = [k for k in kind if k not in value]
        err = SpecError(doc.display, doc.line(path), _field(path + (missing[0],)), "required field missing")
        err._missing_in = path  # see _check_schema
        return err
    if v == "type":
        want = kind if isinstance(kind, list) else [kind]
        words = " or ".join(_TYPE_WORDS[t] for t in want)
        return SpecError(doc.display, doc.line(path), _field(path), f"expected {words}, got {_describe(value)}")
    if v == "enum":
        if xmsg:
            msg = f"{xmsg} {value!r}"
        else:
            msg = f"unknown value {value!r}" if isinstance(value, str) else f"unexpected {_describe(value)}"
        return SpecError(doc.display, doc.line(path), _field(path),
                         f"{msg}; expected one of: {', '.join(map(str, kind))}")
    if v == "pattern":
        msg = xmsg or f"does not match {kind}"
        return SpecError(doc.display, doc.line(path), _field(path), f"{msg}; got {value!r}")
    if v == "minimum":
        return SpecError(doc.display, doc.line(path), _field(path), f"must be >= {kind}, got {value}")
    if v == "exclusiveMinimum":
        return SpecError(doc.display, doc.line(path), _field(path), f"must be > {kind}, got {value}")
    if v == "maximum":
        return SpecError(doc.display, doc.line(path), _field(path), f"must be <= {kind}, got {value}")
    if v == "minItems":
        msg = "must not be empty" if kind == 1 else f"needs at least {kind} items"
        return SpecError(doc.display, doc.line(path), _field(path), msg)
    if v == "minProperties":
        return SpecError(doc.display, doc.line(path), _field(path), "must not be empty")
    if v == "minLength":
        return SpecError(doc.display, doc.line(path), _field(path), "must not be empty")
    if v == "uniqueItems":
        seen: list = []
        for i, item in enumerate(value):
            if any(item == s and type(item) is type(s) for s in seen):
                return SpecError(doc.display, doc.line(path + (i,)), _field(path + (i,)),
                                 f"{_describe(item)} is listed twice")
            seen.append(item)
    return SpecError(doc.display, doc.line(path), _field(path), error.message.splitlines()[0])


def _pick(errors: list[SpecError]) -> SpecError:
    """The one error to report: the first in the file, but a typo before the field it left missing."""
    typo_in = {getattr(e, "_unknown_in", None) for e in errors} - {None}
    errors = [e for e in errors if getattr(e, "_missing_in", None) not in typo_in] or errors
    return min(errors, key=lambda e: (e.line or 0, len(e.field or "")))


def _check_schema(doc: _Doc) -> None:
    errors = [_schema_error(doc, e) for e in _validator().iter_errors(doc.data)]
    if errors:
        raise _pick(errors)


# --------------------------------------------------------------------------------------------
# Pass 3: meaning


class _Builder:
    """Typed Spec from schema-valid data; collects semantic errors and raises the first (by line)."""

    def __init__(self, doc: _Doc, path: Path):
        self.doc = doc
        self.path = path
        self.errors: list[SpecError] = []

    def fail(self, path: Key, message: str) -> None:
        self.errors.append(SpecError(self.doc.display, self.doc.line(path), _field(path), message))

    def build(self) -> Spec:
        d = self.doc.data
        engine = self._engine(d["engine"])
        layouts = self._layouts(d["layouts"], engine)
        workloads, gen_lens = self._workloads(d["workload"])
        hardware = d.get("hardware", DEFAULT_HARDWARE)
        budgets = self._budgets(d.get("budgets", {}), hardware, gen_lens)
        baseline = self._baseline(d.get("baseline"))
        requires = self._requires(d, layouts)
        self._marks(d.get("marks", []))
        if self.errors:
            raise min(self.errors, key=lambda e: e.line or 0)
        return Spec(
            path=self.path,
            name=d["name"],
            engine=engine,
            dtype=d.get("dtype", "fp32"),
            workloads=workloads,
            layouts=tuple(layouts),
            repeats=d.get("repeats", DEFAULT_REPEATS),
            warmup=d.get("warmup", DEFAULT_WARMUP),
            hardware=hardware,
            tolerances=self._tolerances(d.get("tolerances", {})),
            budgets=budgets,
            baseline=baseline,
            requires=requires,
            marks=tuple(d.get("marks", [])),
            description=d.get("description", ""),
            lines=self.doc.field_lines(),
        )

    def _engine(self, raw: Any) -> EngineShape | None:
        try:
            return resolve_engine(raw)
        except ValueError as exc:
            message = str(exc)
            at: Key = ("engine",)
            if isinstance(raw, dict):  # point at the first field the message names that the spec gives
                for word in re.findall(r"[a-z_]+", message):
                    if word in raw and word not in ("preset", "name"):
                        at = ("engine", word)
                        break
            self.fail(at, message)
            return None

    def _layouts(self, raw: list, engine: EngineShape | None) -> list[Layout]:
        out = []
        for i, item in enumerate(raw):
            at: Key = ("layouts", i)
            try:
                layout = Layout.parse(item) if isinstance(item, str) else Layout(item.get("tp", 1), item.get("pp", 1))
            except LayoutError as exc:
                self.fail(at, str(exc))
                continue
            out.append(layout)
            if engine is None:
                continue
            if layout.tp < 1 or layout.pp < 1:
                self.fail(at, f"{layout}: tp and pp must be >= 1")
                continue
            try:
                layout.validate(engine)
            except LayoutError as exc:
                message = str(exc)
                prefix = f"{layout}: "
                if message.startswith(prefix):
                    message = message[len(prefix):]
                if isinstance(item, dict):
                    for key in ("pp", "tp"):
                        if f"{key}=" in message and key in item:
                            at = ("layouts", i, key)
                            break
                self.fail(at, f"{message} ({engine.name})")
        return out

    def _workloads(self, raw: dict) -> tuple[tuple[Workload, ...], list[tuple[int, Key]]]:
        def values(name: str, default: int) -> list[tuple[int, Key]]:
            v = raw.get(name, default)
            if isinstance(v, list):
                return [(x, ("workload", name, i)) for i, x in enumerate(v)]
            return [(v, ("workload", name))]

        batch, prompt, gen = values("batch", 1), values("prompt_len", 0), values("gen_len", 0)
        workloads = tuple(Workload(b, s, g) for (b, _), (s, _), (g, _) in itertools.product(batch, prompt, gen))
        return workloads, gen

    def _duration(self, raw: Any, at: Key) -> float | None:
        try:
            return parse_duration(raw)
        except ValueError as exc:
            self.fail(at, str(exc))
            return None

    def _budgets(self, raw: dict, spec_hardware: str, gen_lens: list[tuple[int, Key]]) -> Budgets:
        block_hw = raw.get("hardware")
        default_hw = block_hw or spec_hardware
        preset = raw.get("preset")
        items: list[Budget] = []
        preset_line = self.doc.line(("budgets", "preset"))
        for metric in BUDGET_METRICS:
            if metric == "op_latency":
                for op, entry in raw.get("op_latency", {}).items():
                    b = self._percentile_budget(entry, ("budgets", "op_latency", op), "op_latency", default_hw, op)
                    if b:
                        items.append(b)
            elif metric == "bytes_per_token":
                if metric in raw:
                    at: Key = ("budgets", metric, "max")
                    try:
                        items.append(Budget(metric, max=parse_bytes(raw[metric]["max"]), line=self.doc.line(at)))
                    except ValueError as exc:
                        self.fail(at, str(exc))
            elif metric in raw:
                b = self._percentile_budget(raw[metric], ("budgets", metric), metric, default_hw, None)
                if b:
                    items.append(b)
            elif preset and metric in SLO_PRESETS[preset]:
                items.append(Budget(metric, p99=SLO_PRESETS[preset][metric], hardware=default_hw, line=preset_line))
        for b in items:
            if b.metric in _DECODE_METRICS:
                for g, at in gen_lens:
                    if g < 2:
                        self.fail(at, f"gen_len {g} has no decode step, but the {b.metric} budget needs one "
                                      f"(gen_len >= 2)")
                break
        return Budgets(items=tuple(items), hardware=block_hw, preset=preset)

    def _percentile_budget(self, entry: dict, at: Key, metric: str, default_hw: str, op: str | None) -> Budget | None:
        if metric == "comm_share":
            p50, p99 = entry.get("p50"), entry.get("p99")
        else:
            p50 = self._duration(entry["p50"], at + ("p50",)) if "p50" in entry else None
            p99 = self._duration(entry["p99"], at + ("p99",)) if "p99" in entry else None
            if ("p50" in entry and p50 is None) or ("p99" in entry and p99 is None):
                return None
        if p50 is not None and p99 is not None and p50 > p99:
            self.fail(at + ("p50",), f"p50 {_fmt_value(metric, p50)} exceeds p99 {_fmt_value(metric, p99)}")
            return None
        return Budget(metric, p50=p50, p99=p99, hardware=entry.get("hardware", default_hw), op=op,
                      line=self.doc.line(at))

    def _tolerances(self, raw: dict) -> Tolerances:
        lat = raw.get("latency", {})
        inside = lat.get("inside_fraction", DEFAULT_INSIDE_FRACTION)
        slack = lat.get("slack", DEFAULT_SLACK)
        per_op = tuple(
            (op, LatencyTolerance(o.get("inside_fraction", inside), o.get("slack", slack)))
            for op, o in lat.get("per_op", {}).items()
        )
        return Tolerances(latency=LatencyTolerance(inside, slack, per_op))

    def _baseline(self, raw: dict | None) -> Baseline | None:
        if raw is None:
            return None
        threshold, mde = raw["threshold"], raw.get("min_detectable")
        if mde is not None and threshold < mde:
            self.fail(("baseline", "threshold"),
                      f"threshold {threshold:g} is below min_detectable {mde:g}: the gate would flag noise")
        return Baseline(threshold=threshold, min_detectable=mde, metrics=tuple(raw.get("metrics", ())),
                        file=raw.get("file"))

    def _requires(self, d: dict, layouts: list[Layout]) -> Requires:
        raw = d.get("requires", {})
        backend = raw.get("backend")
        gpus = raw.get("gpus")
        if "min_gpus" in d:
            if gpus is not None and gpus != d["min_gpus"]:
                self.fail(("min_gpus",), f"min_gpus {d['min_gpus']} contradicts requires.gpus {gpus}")
            gpus = d["min_gpus"]
        if backend == "nccl":
            widest = max((lay.world_size for lay in layouts), default=1)
            if gpus is None:
                gpus = widest
            elif gpus == 0:
                at = ("requires", "gpus") if "gpus" in raw else ("min_gpus",)
                self.fail(at, "backend nccl needs GPUs, got 0")
            else:
                for i, lay in enumerate(layouts):
                    if lay.world_size > gpus:
                        self.fail(("layouts", i),
                                  f"{lay} needs {lay.world_size} ranks, but nccl runs one rank per GPU and "
                                  f"the spec requires {gpus}")
        return Requires(gpus=gpus or 0, backend=backend)

    _ARG_MARKS = {"parametrize", "skipif", "usefixtures", "filterwarnings"}

    def _marks(self, marks: list[str]) -> None:
        for i, mark in enumerate(marks):
            if mark in self._ARG_MARKS:
                self.fail(("marks", i), f"marker {mark!r} needs arguments; only argument-free markers can be listed")


# --------------------------------------------------------------------------------------------
# Entry points


def parse_spec(text: str, path: "str | os.PathLike[str]" = "<string>") -> Spec:
    """A spec from YAML text; ``path`` is used in messages and kept as :attr:`Spec.path`."""
    display = _display_path(path)
    doc = _Doc.parse(text, display)
    if not isinstance(doc.data, dict):
        raise SpecError(display, doc.line(()), None,
                         f"top level must be a mapping of spec fields, got {_describe(doc.data)}")
    _check_schema(doc)
    spec = _Builder(doc, Path(path)).build()
    spec.cases()  # refuse duplicate case ids now, at load
    return spec


def load_spec(path: "str | os.PathLike[str]") -> Spec:
    """Load and check one spec file; raises :class:`SpecError` (one, located) on any problem."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise SpecError(path, None, None, f"cannot read spec: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SpecError(path, line, None, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    return parse_spec(text, path)


def load_specs(paths: "Iterable[str | os.PathLike[str]]") -> list[Spec]:
    """Load spec files (a directory stands for its ``*.yaml`` / ``*.yml``, sorted).

    Spec names must be unique across the set (they prefix test ids).
    """
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            files.extend(sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml") and q.is_file()))
        else:
            files.append(p)
    specs: list[Spec] = []
    by_name: dict[str, Spec] = {}
    for f in files:
        spec = load_spec(f)
        if spec.name in by_name:
            other = by_name[spec.name]
            raise spec.error("name", f"duplicate spec name {spec.name!r} (also in "
                                     f"{_display_path(other.path)}:{other.line_of('name')})")
        by_name[spec.name] = spec
        specs.append(spec)
    return specs
