"""What the kernel says of a process on this host (``/proc/PID/stat``), read in one place.

The launcher, the node launcher and the emulated cluster signal only processes they can tell
apart from a later process that reuses the pid: the start time (field 22) does that.  The command
name (field 2) may hold spaces and parentheses, so fields are read after its last ``)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class ProcStat(NamedTuple):
    state: str  # R, S, D, Z (zombie), X (dead), ...
    ppid: int
    session: int
    start_time: int  # clock ticks after boot


def proc_stat(pid: int) -> ProcStat | None:
    """The process ``pid`` as the kernel sees it now, or None when there is none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return ProcStat(fields[0], int(fields[1]), int(fields[3]), int(fields[19]))
    except (OSError, IndexError, ValueError):
        return None


def running(pid: int | None) -> bool:
    """Whether ``pid`` runs (a zombie only waits to be reaped)."""
    st = proc_stat(pid) if pid is not None else None
    return st is not None and st.state not in ("Z", "X")


def all_processes() -> dict[int, ProcStat]:
    """Every process of this host, by pid."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := proc_stat(int(entry))) is not None:
            out[int(entry)] = st
    return out
