"""Spec values in words: a budget value formatted back with its unit (``200 ms``, ``64 B``), and the
kind of a plain YAML value for type errors (``an integer``).

Durations and byte counts are parsed, and plain values described (``'2s' (a string)``), by
:mod:`llmcomm_tests.core.units`, with every other value a user types.
"""

from __future__ import annotations

from typing import Any

__all__ = ["fmt_value", "kind_of"]


def _fmt_seconds(s: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if s >= scale:
            return f"{s / scale:g} {unit}"
    return f"{s / 1e-9:g} ns"


def fmt_value(metric: str, v: float) -> str:
    """A budget value of ``metric`` with its unit, for messages (``"200 ms"``, ``"64 B"``)."""
    if metric == "comm_share":
        return f"{v:g}"
    if metric == "bytes_per_token":
        return f"{v:g} B"
    return _fmt_seconds(v)


def kind_of(v: Any) -> str:
    """The kind of a plain value, with its article: ``"an integer"``, ``"a boolean"``, ``"null"``."""
    if isinstance(v, bool):
        return "a boolean"
    if v is None:
        return "null"
    return {int: "an integer", float: "a float", str: "a string", dict: "a mapping", list: "a list"}.get(
        type(v), type(v).__name__)
