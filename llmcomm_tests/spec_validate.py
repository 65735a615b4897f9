"""Passes 2 and 3 of spec loading: check the plain data of a :class:`~llmcomm_tests.spec_yaml.Doc`.

2. Structure: :func:`check_schema` validates against ``schema/slo-spec.schema.json`` and turns the
   jsonschema error it picks into one :class:`SpecError` at the line of the node it is about
   (a typo'd key before the field it left missing; the type the user most likely meant in an anyOf).
3. Meaning: :func:`build_spec` makes the typed :class:`Spec` from schema-valid data: the engine
   shape resolves, each layout fits it, durations and byte counts parse and are positive,
   p50 <= p99, decode metrics have a decode step, requires agrees with the layouts, ...
   It collects these errors and raises the first (by line).
"""

from __future__ import annotations

import difflib
import functools
import itertools
import re
from pathlib import Path
from typing import Any

from .engine.config import EngineShape, resolve_engine
from .engine.layout import Layout, LayoutError
from .spec import (
    BUDGET_METRICS,
    DEFAULT_HARDWARE,
    DEFAULT_INSIDE_FRACTION,
    DEFAULT_REPEATS,
    DEFAULT_SLACK,
    DEFAULT_WARMUP,
    SLO_PRESETS,
    Baseline,
    Budget,
    Budgets,
    LatencyTolerance,
    Requires,
    Spec,
    SpecError,
    Tolerances,
    Workload,
    spec_schema,
)
from .spec_values import describe, fmt_value, parse_bytes, parse_duration
from .spec_yaml import Doc, Key, field_name

__all__ = ["check_schema", "build_spec"]

# Metrics that need at least one decode step (gen_len >= 2).
_DECODE_METRICS = ("tpot", "itl")


# --------------------------------------------------------------------------------------------
# Pass 2: structure (JSON Schema)


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


def _schema_error(doc: Doc, error) -> SpecError:
    """One jsonschema error (possibly an anyOf with sub-errors) → one located SpecError."""
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    v, kind, value = error.validator, error.validator_value, error.instance
    xmsg = schema.get("x-message")
    if v in ("anyOf", "oneOf"):
        if xmsg:
            got = "" if isinstance(value, (dict, list)) else f"; got {describe(value)}"
            return SpecError(doc.display, doc.line(path), field_name(path), f"{xmsg}{got}")
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
        return SpecError(doc.display, doc.line(path), field_name(path), f"expected {words}, got {describe(value)}")
    if v == "additionalProperties":
        allowed = list(schema.get("properties", {}))
        extra = [k for k in value if k not in allowed]
        key = min(extra, key=lambda k: doc.line(path + (k,)))
        hint = difflib.get_close_matches(key, allowed, n=1)
        msg = f"unknown field; did you mean {hint[0]!r}?" if hint else "unknown field"
        err = SpecError(doc.display, doc.line(path + (key,)), field_name(path + (key,)),
                        f"{msg} (allowed: {', '.join(allowed)})")
        err._unknown_in = path
        return err
    if v == "required":
        missing = [k for k in kind if k not in value]
        err = SpecError(doc.display, doc.line(path), field_name(path + (missing[0],)), "required field missing")
        err._missing_in = path  # see _pick
        return err
    if v == "type":
        want = kind if isinstance(kind, list) else [kind]
        words = " or ".join(_TYPE_WORDS[t] for t in want)
        return SpecError(doc.display, doc.line(path), field_name(path), f"expected {words}, got {describe(value)}")
    if v == "enum":
        if xmsg:
            msg = f"{xmsg} {value!r}"
        else:
            msg = f"unknown value {value!r}" if isinstance(value, str) else f"unexpected {describe(value)}"
        return SpecError(doc.display, doc.line(path), field_name(path),
                         f"{msg}; expected one of: {', '.join(map(str, kind))}")
    if v == "pattern":
        msg = xmsg or f"does not match {kind}"
        return SpecError(doc.display, doc.line(path), field_name(path), f"{msg}; got {value!r}")
    if v == "minimum":
        return SpecError(doc.display, doc.line(path), field_name(path), f"must be >= {kind}, got {value}")
    if v == "exclusiveMinimum":
        return SpecError(doc.display, doc.line(path), field_name(path), f"must be > {kind}, got {value}")
    if v == "maximum":
        return SpecError(doc.display, doc.line(path), field_name(path), f"must be <= {kind}, got {value}")
    if v == "minItems":
        msg = "must not be empty" if kind == 1 else f"needs at least {kind} items"
        return SpecError(doc.display, doc.line(path), field_name(path), msg)
    if v == "minProperties":
        return SpecError(doc.display, doc.line(path), field_name(path), "must not be empty")
    if v == "minLength":
        return SpecError(doc.display, doc.line(path), field_name(path), "must not be empty")
    if v == "uniqueItems":
        seen: list = []
        for i, item in enumerate(value):
            if any(item == s and type(item) is type(s) for s in seen):
                return SpecError(doc.display, doc.line(path + (i,)), field_name(path + (i,)),
                                 f"{describe(item)} is listed twice")
            seen.append(item)
    return SpecError(doc.display, doc.line(path), field_name(path), error.message.splitlines()[0])


def _pick(errors: list[SpecError]) -> SpecError:
    """The one error to report: the first in the file, but a typo before the field it left missing."""
    typo_in = {getattr(e, "_unknown_in", None) for e in errors} - {None}
    errors = [e for e in errors if getattr(e, "_missing_in", None) not in typo_in] or errors
    return min(errors, key=lambda e: (e.line or 0, len(e.field or "")))


def check_schema(doc: Doc) -> None:
    """Raise the one located :class:`SpecError` for the first schema problem of ``doc``, if any."""
    errors = [_schema_error(doc, e) for e in _validator().iter_errors(doc.data)]
    if errors:
        raise _pick(errors)


# --------------------------------------------------------------------------------------------
# Pass 3: meaning


def build_spec(doc: Doc, path: Path) -> Spec:
    """The typed Spec of schema-valid ``doc``; raises the first (by line) semantic :class:`SpecError`."""
    return _Builder(doc, path).build()


class _Builder:
    """Typed Spec from schema-valid data; collects semantic errors and raises the first (by line)."""

    def __init__(self, doc: Doc, path: Path):
        self.doc = doc
        self.path = path
        self.errors: list[SpecError] = []

    def fail(self, path: Key, message: str) -> None:
        self.errors.append(SpecError(self.doc.display, self.doc.line(path), field_name(path), message))

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
            self.fail(at + ("p50",), f"p50 {fmt_value(metric, p50)} exceeds p99 {fmt_value(metric, p99)}")
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

