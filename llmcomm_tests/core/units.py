"""Values a user types, parsed in one place: link rates (and, as they move here, sizes, times, counts).

Each parser takes the text as written and raises ``ValueError`` with a message that names the value
and shows a valid example; callers add where the value came from (an option, a spec line).
"""

from __future__ import annotations

import re

_RATE = re.compile(r"^\d+(\.\d+)?(bit|kbit|mbit|gbit|bps|kbps|mbps|gbps)$")


def rate_bytes_per_s(rate: str) -> float:
    """tc's rate words → bytes per second (``200mbit`` → 25e6; tc's ``bps`` means bytes/s)."""
    m = re.match(r"^(\d+(?:\.\d+)?)([a-z]+)$", rate.strip().lower())
    if not m or not _RATE.match(rate.strip().lower()):
        raise ValueError(f"bad link rate {rate!r}: expected e.g. 200mbit, 1gbit")
    value, unit = float(m.group(1)), m.group(2)
    scale = {"bit": 1 / 8, "kbit": 1e3 / 8, "mbit": 1e6 / 8, "gbit": 1e9 / 8,
             "bps": 1, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}[unit]
    return value * scale
