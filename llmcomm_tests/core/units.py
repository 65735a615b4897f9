"""Every value a user types, parsed in one place: counts, numbers, fractions and percentages,
durations, sizes, link rates and switches.

Each parser takes the value as written and raises ``ValueError`` with a message that names the value
and, where it helps, shows a valid one; callers add where it came from (``--llmcomm-repeats: ``,
``spec.yaml:7: budgets.ttft.p99: ``).  ``core/arguments.py`` wraps them as argparse types, the
plugin's options, the spec loader and the fault syntax call them directly.

Sizes: a bare letter or an ``i`` means powers of 1024 (``64K`` = ``64KiB`` = 65536), a ``B`` after
the letter alone means powers of 1000 (``64kB`` = ``64KB`` = 64000), as in the spec format.
No torch here.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, TypeVar

__all__ = ["parse_count", "parse_number", "parse_positive_number", "parse_fraction", "parse_percent",
           "parse_factor", "parse_duration", "parse_bytes", "parse_byte_count", "rate_bytes_per_s", "parse_flag",
           "split_list", "parse_list", "describe"]

T = TypeVar("T")

_NUMBER = r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_WITH_UNIT = re.compile(rf"^\s*({_NUMBER})\s*([^\s0-9.]*)\s*$")

_SECONDS_PER_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}
_BYTES_PER_UNIT = {"": 1, "b": 1,
                   "k": 2**10, "kib": 2**10, "m": 2**20, "mib": 2**20, "g": 2**30, "gib": 2**30,
                   "kb": 1e3, "mb": 1e6, "gb": 1e9}
_SIZE_EXAMPLE = "a byte count such as 4096, 64K or 16MiB (K, KiB: 1024 bytes; kB: 1000)"
_BYTES_PER_S_PER_RATE_UNIT = {"bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
                              "bps": 1, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}


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


# -- plain numbers -------------------------------------------------------------------------------

def parse_count(text: "str | int", minimum: int = 0) -> int:
    """A whole number >= ``minimum`` (repeats, ranks, seeds): ``"4"`` → 4."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"expected a whole number, got {describe(text)}")
    try:
        value = int(text.strip()) if isinstance(text, str) else text
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"must be >= {minimum}, got {value}")
    return value


def _float(text) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {text!r}") from None


def parse_number(text: str) -> float:
    """A finite number: ``"0.6"`` → 0.6."""
    value = _float(text)
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {text!r}")
    return value


def parse_positive_number(text: str) -> float:
    """A finite number > 0 (a timeout in seconds, a scale)."""
    value = _float(text)
    if not value > 0 or value == float("inf"):
        raise ValueError(f"must be a finite number > 0, got {text}")
    return value


def parse_fraction(text: str) -> float:
    """A number strictly between 0 and 1 (a quantile): ``"0.999"``."""
    value = parse_positive_number(text)
    if value >= 1:
        raise ValueError(f"must be between 0 and 1, got {text}")
    return value


def parse_percent(text: str) -> float:
    """A positive percentage as a fraction: ``"10%"`` → 0.1 (``"150%"`` → 1.5)."""
    m = re.match(rf"^\s*({_NUMBER})\s*%\s*$", text)
    if not m:
        raise ValueError(f"expected a percentage such as 10%, got {text!r}")
    value = float(m[1]) / 100
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"percentage must be positive, got {text!r}")
    return value


def parse_factor(text: str) -> float:
    """A positive multiplier, with or without an ``x``: ``"2"``, ``"1.5x"`` → 1.5."""
    body = text.strip()
    body = body[:-1] if body[-1:] in ("x", "×") else body
    try:
        value = float(body) if re.fullmatch(_NUMBER, body) else float("nan")
    except ValueError:
        value = float("nan")
    if not math.isfinite(value):
        raise ValueError(f"expected a factor such as 2 or 1.5x, got {text!r}")
    if value <= 0:
        raise ValueError(f"factor must be positive, got {text!r}")
    return value


# -- quantities with units -----------------------------------------------------------------------

def parse_duration(value: "float | int | str", unitless: str | None = None) -> float:
    """Seconds from a number of seconds or a string with a unit: ``"200ms"``, ``"2 s"``, ``"250us"``.

    A string without a unit is refused (``"2"``: seconds or milliseconds?) unless ``unitless``
    names the unit it is in (``unitless="s"`` for ``--ttft 0.2``).  Positive and finite only.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a duration, got {describe(value)}")
    if isinstance(value, str):
        m = _WITH_UNIT.match(value)
        unit = m[2].lower() if m else None
        if m and unit == "" and unitless is not None:
            unit = unitless
        if unit not in _SECONDS_PER_UNIT:
            raise ValueError(f"cannot parse duration {value!r}: use seconds or a unit (ns, us, ms, s) "
                             f"such as '200ms'")
        seconds = float(m[1]) * _SECONDS_PER_UNIT[unit]
    else:
        seconds = float(value)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"duration must be positive, got {value!r}")
    return seconds


def parse_bytes(value: "float | int | str") -> float:
    """Bytes from a number or a string: ``4096``, ``"64K"``, ``"64 KiB"``, ``"1.5MB"``; positive only.
    Fractions survive (``"1.5kB"`` → 1500.0); :func:`parse_byte_count` wants whole bytes."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a byte count, got {describe(value)}")
    if isinstance(value, str):
        m = _WITH_UNIT.match(value)
        unit = m[2].lower() if m else None
        if unit not in _BYTES_PER_UNIT:
            raise ValueError(f"bad size {value!r}: {_SIZE_EXAMPLE}")
        n = float(m[1]) * _BYTES_PER_UNIT[unit]
    else:
        n = float(value)
    if not (math.isfinite(n) and n > 0):
        raise ValueError(f"bad size {value!r}: must be positive")
    return n


def parse_byte_count(text: "str | int") -> int:
    """Whole bytes >= 1 from a size (``"64K"`` → 65536); a fraction of a byte is dropped."""
    n = int(parse_bytes(text))
    if n < 1:
        raise ValueError(f"bad size {text!r}: {_SIZE_EXAMPLE}")
    return n


def rate_bytes_per_s(rate: str) -> float:
    """tc's rate words → bytes per second (``200mbit`` → 25e6; tc's ``bps`` means bytes/s)."""
    m = re.match(r"^(\d+(?:\.\d+)?)([a-z]+)$", rate.strip().lower())
    if not m or m[2] not in _BYTES_PER_S_PER_RATE_UNIT:
        raise ValueError(f"bad link rate {rate!r}: expected e.g. 200mbit, 1gbit")
    return float(m[1]) * _BYTES_PER_S_PER_RATE_UNIT[m[2]]


# -- switches and lists --------------------------------------------------------------------------

def parse_flag(text: "str | bool") -> bool:
    """true/false in its usual spellings (1/0, yes/no, on/off); empty is false."""
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def split_list(text: str) -> list[str]:
    """Comma-separated items, blanks dropped: ``"a, b,"`` → ``["a", "b"]``."""
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_list(text: str, parse: Callable[[str], T]) -> list[T]:
    """Comma-separated items, each through ``parse`` (its message names the bad item)."""
    items = split_list(text)
    if not items:
        raise ValueError(f"expected one or more comma-separated values, got {text!r}")
    return [parse(item) for item in items]
