"""``llmcomm ab OLD_PYTHON NEW_PYTHON -- <pytest args>``: the A/B gate as one command.

A thin wrapper: runs ``OLD_PYTHON -m pytest --llmcomm-ab NEW_PYTHON <pytest args>``, so arm A is
the old environment (it also runs pytest) and arm B the new one.  The same interpreter twice is an
A/A calibration: how often does the gate alarm when nothing changed?
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys


def add_arguments(parser) -> None:
    # Options first: everything after NEW_PYTHON (a leading "--" dropped) goes to pytest as given.
    parser.add_argument("--pairs", type=int, default=None, help="pair budget per case (--llmcomm-ab-pairs)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the pair order (--llmcomm-ab-seed)")
    parser.add_argument("old_python", help="interpreter of the old environment (arm A; runs pytest)")
    parser.add_argument("new_python", help="interpreter of the new environment (arm B)")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="-- then pytest arguments (specs, -k, ...)")


def command(args) -> list[str]:
    pythons = []
    for role, path in (("old", args.old_python), ("new", args.new_python)):
        found = shutil.which(path)
        if found is None:
            raise SystemExit(f"llmcomm ab: {role} interpreter {path!r}: not an executable file")
        pythons.append(os.path.abspath(found) if os.sep in path else found)
    cmd = [pythons[0], "-m", "pytest", f"--llmcomm-ab={pythons[1]}"]
    if args.pairs is not None:
        cmd.append(f"--llmcomm-ab-pairs={args.pairs}")
    if args.seed is not None:
        cmd.append(f"--llmcomm-ab-seed={args.seed}")
    rest = list(args.pytest_args)
    return cmd + (rest[1:] if rest[:1] == ["--"] else rest)


def main(args) -> int:
    cmd = command(args)
    print("llmcomm ab:", " ".join(cmd), file=sys.stderr, flush=True)
    return subprocess.call(cmd)
