"""Pass 3 of spec loading: meaning.  :func:`build_spec` makes the typed :class:`Spec` from
schema-valid data: the engine shape resolves, each layout fits it, durations and byte counts parse
and are positive, p50 <= p99, decode metrics have a decode step, requires agrees with the layouts,
...  It collects these errors and raises the first (by line)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path, PurePosixPath
from typing import Any

from llmcomm_tests.spec.topology import Topology, TopologyError
from llmcomm_tests.spec.topology import parse as parse_topology
from llmcomm_tests.engine.config import EngineShape, resolve_engine
from llmcomm_tests.engine.layout import Layout, LayoutError
from llmcomm_tests.spec.types import (BUDGET_METRICS, DEFAULT_HARDWARE, DEFAULT_INSIDE_FRACTION, DEFAULT_REPEATS, DEFAULT_SLACK, DEFAULT_WARMUP, SLO_PRESETS, Baseline, Budget, Budgets, LatencyTolerance, Requires, Spec, SpecError, Tolerances, Workload)
from llmcomm_tests.core.units import parse_bytes, parse_duration
from llmcomm_tests.spec.values import fmt_value
from llmcomm_tests.spec.yaml_lines import Doc, Key, field_name

__all__ = ["build_spec"]


# Metrics that need at least one decode step (gen_len >= 2).
_DECODE_METRICS = ("tpot", "itl")


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
        if engine is not None:
            self._within_context(d["workload"], workloads, engine)
        hardware = d.get("hardware", DEFAULT_HARDWARE)
        budgets = self._budgets(d.get("budgets", {}), hardware, gen_lens)
        baseline = self._baseline(d.get("baseline"))
        requires = self._requires(d, layouts)
        topology = self._topology(d.get("topology"), layouts, d.get("framework", "ours"))
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
            hardware_given="hardware" in d,
            tolerances=self._tolerances(d.get("tolerances", {})),
            budgets=budgets,
            baseline=baseline,
            requires=requires,
            marks=tuple(d.get("marks", [])),
            framework=d.get("framework", "ours"),
            topology=topology,
            xfails=tuple((i, item["xfail"]) for i, item in enumerate(d["layouts"]) if isinstance(item, dict) and "xfail" in item),
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

    def _within_context(self, raw: dict, workloads, engine: EngineShape) -> None:
        """The longest request must fit the shape's context (reported once, at prompt_len)."""
        longest = max(workloads, key=lambda w: w.prompt_len + w.gen_len, default=None)
        if longest is not None:
            try:
                engine.check_request(longest.prompt_len, longest.gen_len)
            except ValueError as exc:
                at: Key = ("workload", "prompt_len")
                if isinstance(raw.get("prompt_len"), list):
                    at = ("workload", "prompt_len", raw["prompt_len"].index(longest.prompt_len))
                self.fail(at, str(exc))

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
        tail = lat.get("tail_slack")
        per_op = tuple(
            (op, LatencyTolerance(o.get("inside_fraction", inside), o.get("slack", slack),
                                  tail_slack=o.get("tail_slack", tail)))
            for op, o in lat.get("per_op", {}).items()
        )
        return Tolerances(latency=LatencyTolerance(inside, slack, per_op, tail))

    def _baseline(self, raw: dict | None) -> Baseline | None:
        if raw is None:
            return None
        threshold, mde = raw["threshold"], raw.get("min_detectable")
        if mde is not None and threshold < mde:
            self.fail(("baseline", "threshold"),
                      f"threshold {threshold:g} is below min_detectable {mde:g}: the gate would flag noise")
        folder = raw.get("file")
        if folder is not None and (PurePosixPath(folder).is_absolute() or ".." in PurePosixPath(folder).parts):
            # a spec may come from a merge request: its baselines stay beside it (docs/security.md)
            self.fail(("baseline", "file"), f"{folder!r} leaves the spec's folder: name a folder inside it, "
                                            "such as baselines/")
        return Baseline(threshold=threshold, min_detectable=mde, metrics=tuple(raw.get("metrics", ())),
                        file=folder)

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

    def _topology(self, raw: dict | None, layouts: list[Layout], framework: str) -> Topology | None:
        if raw is None:
            return None
        try:
            topology = parse_topology(raw, where=str(self.doc.display))
        except TopologyError as exc:
            named = re.search(r"topology\.(\w+)", str(exc))
            at: Key = ("topology", named.group(1)) if named and named.group(1) in raw else ("topology",)
            self.fail(at, re.sub(r"^topology(\.\w+)?:? ", "", str(exc).split(": ", 1)[1]))
            return None
        for i, layout in enumerate(layouts):
            if layout.world_size > topology.world_size:
                self.fail(("layouts", i), f"{layout} needs {layout.world_size} ranks; the topology has "
                                          f"{topology.nodes} nodes x {topology.ranks_per_node} ranks")
        if framework != "ours" and topology.nodes > 1:
            self.fail(("topology",), f"framework {framework} starts its own ranks; several nodes need framework: ours")
        return topology

    _ARG_MARKS = {"parametrize", "skipif", "usefixtures", "filterwarnings"}

    def _marks(self, marks: list[str]) -> None:
        for i, mark in enumerate(marks):
            if mark in self._ARG_MARKS:
                self.fail(("marks", i), f"marker {mark!r} needs arguments; only argument-free markers can be listed")

