"""Pass 1 of spec loading: YAML text → plain data, keeping the line of every node.

Safe by construction: only plain YAML types (mappings, lists, str, int, float, bool, null) are
built; ``!!python/...`` and every other tag, merge keys (``<<``), non-string and duplicate keys,
non-finite numbers and alias blow-ups are refused, each as one located :class:`SpecError`.
Date-like values stay strings.  Node paths (:data:`Key`) and their dotted names
(:func:`field_name`) are how the later passes point back at a line.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from llmcomm_tests.core.yaml_loader import SafeLoader12
from llmcomm_tests.spec.types import SpecError
from llmcomm_tests.spec.values import kind_of

__all__ = ["Doc", "Key", "field_name"]

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null")}
_MAX_NODES = 100_000  # aliases can blow a small file up; specs are small


class _LineLoader(SafeLoader12):
    """The shared loader's rules (YAML 1.2 floats, no timestamps); only composes here:
    :class:`Doc` builds the data and records each node's start line."""


Key = tuple  # a node's path: keys (str) and list indices (int)


def field_name(path: Key) -> str:
    """``("layouts", 1, "tp")`` → ``"layouts[1].tp"`` (the field of messages and :attr:`Spec.lines`)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _short_tag(tag: str) -> str:
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag


class Doc:
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
    def parse(cls, text: str, display: str) -> "Doc":
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
        return SpecError(self.display, node.start_mark.line + 1, field_name(path), message)

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
                    raise self._err(key_node, path, f"mapping key {key_node.value} is {kind_of(key)}, not a string; "
                                                    f"quote it")
                line = key_node.start_mark.line + 1
                if key in first_line:
                    raise SpecError(self.display, line, field_name(path + (key,)),
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
        return {field_name(p): self.line(p) for p in self.value_line}
