"""Spec values in words: durations and byte counts parsed from their units, and formatted back.

Also how a plain YAML value is described in a message (``'2s' (a string)``, ``true (a boolean)``).
A leaf module: plain functions raising ValueError, with no spec types, so that
:mod:`llmcomm_tests.spec` can re-export :func:`parse_duration` and :func:`parse_bytes`.
"""

from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["parse_duration", "parse_bytes", "fmt_value", "describe", "kind_of"]

_DURATION_RE = re.compile(r"^\s*((?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*(ns|us|µs|ms|s)\s*$")
_DURATION_PER_SECOND = {"ns": 1e9, "us": 1e6, "µs": 1e6, "ms": 1e3, "s": 1.0}
_BYTES_RE = re.compile(r"^\s*((?:[0-9]+\.?[0-9]*|\.[0-9]+))\s*(B|kB|KB|KiB|MB|MiB|GB|GiB)\s*$")
_BYTES_UNITS = {"B": 1, "kB": 1e3, "KB": 1e3, "KiB": 2**10, "MB": 1e6, "MiB": 2**20, "GB": 1e9, "GiB": 2**30}


def parse_duration(value: "float | int | str") -> float:
    """Seconds from a number of seconds or a string such as ``"200ms"``, ``"2 s"``, ``"1.5s"``.

    Raises ValueError for anything else, and for durations that are not positive and finite.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {describe(value)}")
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
        raise ValueError(f"expected a duration, got {describe(value)}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def parse_bytes(value: "float | int | str") -> float:
    """Bytes from a number or a string such as ``"64 KiB"``, ``"1.5MB"``; positive only."""
    if isinstance(value, bool):
        raise ValueError(f"expected a byte count, got {describe(value)}")
    if isinstance(value, (int, float)):
        n = float(value)
    elif isinstance(value, str):
        m = _BYTES_RE.match(value)
        if not m:
            raise ValueError(f"cannot parse byte count {value!r}: use a unit (B, kB, KiB, MB, MiB, GB, GiB)")
        n = float(m.group(1)) * _BYTES_UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a byte count, got {describe(value)}")
    if not (math.isfinite(n) and n > 0):
        raise ValueError(f"byte count must be positive, got {value!r}")
    return n


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


def describe(v: Any) -> str:
    """A plain value as a message shows what it got: ``'2s' (a string)``, ``true (a boolean)``, ``3``."""
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


def kind_of(v: Any) -> str:
    """The kind of a plain value, with its article: ``"an integer"``, ``"a boolean"``, ``"null"``."""
    if isinstance(v, bool):
        return "a boolean"
    if v is None:
        return "null"
    return {int: "an integer", float: "a float", str: "a string", dict: "a mapping", list: "a list"}.get(
        type(v), type(v).__name__)
