"""Argument types shared by the subcommands, and a parser whose errors are one line.

Bad input is refused while the command line is parsed, before anything is launched: each type
below is a parser of :mod:`llmcomm_tests.core.units` that raises ``argparse.ArgumentTypeError``,
which :class:`OneLineParser` prints as ``llmcomm run: --gen-len: must be >= 1, got 0`` and exit
status 2, as the spec loader does.
No torch here (``llmcomm --help`` stays instant).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Callable, TypeVar

from llmcomm_tests.core import units

T = TypeVar("T")


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``PROG: message (see PROG --help)``, exit 2.  Subparsers
    made from it are of this class too."""

    def error(self, message: str):
        message = re.sub(r"^argument (\S+?)(/\S+)?: ", r"\1: ", message)  # "argument --x/-x: m" -> "--x: m"
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _argument_type(parse: Callable[[str], T], name: str) -> Callable[[str], T]:
    """A parser of core/units as an argparse type: its ValueError becomes the usage error."""
    def argument_type(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    argument_type.__name__ = name  # argparse names the type in some messages
    return argument_type


positive_int = _argument_type(lambda text: units.parse_count(text, minimum=1), "positive_int")
non_negative_int = _argument_type(units.parse_count, "non_negative_int")
positive_float = _argument_type(units.parse_positive_number, "positive_float")
fraction = _argument_type(units.parse_fraction, "fraction")  # strictly between 0 and 1 (a quantile)
# comma-separated message sizes in whole bytes: 4096,64K,16MiB
byte_sizes = _argument_type(lambda text: units.parse_list(text, units.parse_byte_count), "byte_sizes")


def _world_size(text: str) -> int:
    """A communication sweep's rank count: >= 2 (one rank communicates nothing)."""
    value = units.parse_count(text)
    if value < 2:
        raise ValueError(f"{value}: a communication sweep needs at least 2 ranks")
    return value


world_sizes = _argument_type(lambda text: units.parse_list(text, _world_size), "world_sizes")


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
