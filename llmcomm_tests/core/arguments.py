"""Argument types shared by the subcommands, and a parser whose errors are one line.

Bad input is refused while the command line is parsed, before anything is launched: each type
below raises ``argparse.ArgumentTypeError``, which :class:`OneLineParser` prints as
``llmcomm run: --gen-len: must be >= 1, got 0`` and exit status 2, as the spec loader does.
No torch here (``llmcomm --help`` stays instant).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: message (see PROG --help)``, exit 2.  Subparsers
    made from it are of this class too."""

    def error(self, message: str):
        message = re.sub(r"^argument (\S+?)(/\S+)?: ", r"\1: ", message)  # "argument --x/-x: m" -> "--x: m"
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def fraction(text: str) -> float:
    """A number strictly between 0 and 1 (a quantile)."""
    value = positive_float(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}


def byte_sizes(text: str) -> list[int]:
    """Comma-separated message sizes in bytes; K, M and G (also KiB/KB, …) mean powers of 1024."""
    sizes = []
    for item in (part.strip() for part in text.split(",")):
        m = _SIZE.match(item)
        n = int(float(m[1]) * _SIZE_UNITS[m[2].lower()]) if m else 0
        if n < 1:
            raise argparse.ArgumentTypeError(f"bad size {item!r}: a byte count such as 4096, 64K or 16M")
        sizes.append(n)
    return sizes


def world_sizes(text: str) -> list[int]:
    """Comma-separated rank counts of communication sweeps: each >= 2 (one rank communicates nothing)."""
    worlds = []
    for item in (part.strip() for part in text.split(",")):
        value = _int(item)
        if value < 2:
            raise argparse.ArgumentTypeError(f"{value}: a communication sweep needs at least 2 ranks")
        worlds.append(value)
    return worlds


def output_file(text: str) -> str:
    """A file to write at the end: its folder must exist and be writable now, not after the run."""
    folder = Path(text).parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: folder {str(folder)!r} is not writable")
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: it is a folder")
    return text
