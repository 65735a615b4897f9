"""SLO specs: ``slo_specs/*.yaml`` → typed :class:`Spec` → one :class:`Case` per layout × workload.

The public entry of spec loading: the typed result, its constants, :class:`SpecError` and
:func:`load_spec` / :func:`load_specs` / :func:`parse_spec`.

Loading is strict and points at the offending line: every problem is one :class:`SpecError` whose
``str()`` reads ``"slo_specs/x.yaml:12: layouts[1].tp: tp=3 does not divide 8 attention heads"``.

Three passes, each in its own module:

1. YAML → plain data, keeping the line of every node (:mod:`.yaml_lines`; safe: only plain YAML
   types; ``!!python/...`` and other tags are refused, as are duplicate keys and non-string keys).
2. Structure against ``schema/slo-spec.schema.json`` (JSON Schema 2020-12, also published for
   editors); a schema error is mapped back to the line of the node it is about (:mod:`.schema`).
3. Meaning: the engine shape resolves, each layout fits it (:meth:`Layout.validate`), durations and
   byte counts parse (:mod:`.values`) and are positive, p50 <= p99, no two cases share an id,
   ... (:mod:`.build`).

The format is documented in ``docs/spec-format.md``.  This module must not import torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from llmcomm_tests.core.units import describe, parse_bytes, parse_duration
from llmcomm_tests.spec.build import build_spec
from llmcomm_tests.spec.schema import check_schema
from llmcomm_tests.spec.types import (BUDGET_METRICS, DEFAULT_HARDWARE, DURATION_METRICS, OP_CLASSES, SCHEMA_PATH,
                                      SLO_PRESETS, Baseline, Budget, Budgets, Case, LatencyTolerance, Requires, Spec,
                                      SpecError, Tolerances, Workload, _display_path, spec_schema)
from llmcomm_tests.spec.yaml_lines import Doc

__all__ = [
    "SpecError", "Spec", "Case", "Workload", "Budget", "Budgets", "Tolerances", "LatencyTolerance",
    "Baseline", "Requires", "SpecNames", "load_spec", "load_specs", "parse_spec", "parse_duration", "parse_bytes",
    "spec_schema", "SCHEMA_PATH", "OP_CLASSES", "DURATION_METRICS", "BUDGET_METRICS", "SLO_PRESETS",
    "DEFAULT_HARDWARE",
]

# --------------------------------------------------------------------------------------------
# Entry points


def parse_spec(text: str, path: "str | os.PathLike[str]" = "<string>") -> Spec:
    """A spec from YAML text; ``path`` is used in messages and kept as :attr:`Spec.path`."""
    display = _display_path(path)
    doc = Doc.parse(text, display)
    if not isinstance(doc.data, dict):
        raise SpecError(display, doc.line(()), None,
                         f"top level must be a mapping of spec fields, got {describe(doc.data)}")
    check_schema(doc)
    spec = build_spec(doc, Path(path))
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
    names = SpecNames()
    for f in files:
        spec = load_spec(f)
        names.claim(spec)
        specs.append(spec)
    return specs


class SpecNames:
    """The spec names of one set of files (a pytest session's, or :func:`load_specs`'): a name
    prefixes test ids and keys baselines, so two files must not share one."""

    def __init__(self):
        self._by_name: dict[str, Spec] = {}

    def claim(self, spec: Spec) -> None:
        """Raises a SpecError at ``spec``'s name naming the other file that has it."""
        other = self._by_name.setdefault(spec.name, spec)
        if other is not spec and Path(other.path).resolve() != Path(spec.path).resolve():
            raise spec.error("name", f"duplicate spec name {spec.name!r} (also in "
                                     f"{_display_path(other.path)}:{other.line_of('name')})")
