"""Rank-side wrapper under torchrun on a node: say where the rank runs, leave evidence if it dies.

    python -m torch.distributed.run ... -m llmcomm_tests.runtime.node_rank \\
        --results DIR --node-name NODE --target llmcomm_tests.runtime.torchrun_entry:main -- <target's arguments>

Before the target runs, the rank writes ``DIR/rank<R>.start.json`` (rank, node, host, pid); on an
exception ``DIR/rank<R>.err`` (node and traceback); SIGUSR1 dumps its Python stacks to
``DIR/stacks<R>.txt`` (the launcher's hang report).  ``DIR`` is the shared results folder
(node_launch.py says why a folder).  The target is ``module:function`` called with the argument
list and returning an exit code.  Every file is created ``O_EXCL | O_NOFOLLOW``
(core/private_files.py): a planted file or symlink stops the rank instead of being written through.
"""

from __future__ import annotations

import argparse
import faulthandler
import importlib
import json
import os
import signal
import socket
import traceback
from pathlib import Path

from llmcomm_tests.core.private_files import open_new, write_new


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcomm_tests.runtime.node_rank")
    parser.add_argument("--results", required=True)
    parser.add_argument("--node-name", required=True)
    parser.add_argument("--target", required=True, help="module:function(argv) -> int")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    rank = int(os.environ["RANK"])
    results = Path(args.results)
    start = {"rank": rank, "local_rank": int(os.environ.get("LOCAL_RANK", 0)),
             "group_rank": int(os.environ.get("GROUP_RANK", 0)), "node": args.node_name,
             "host": socket.gethostname(), "pid": os.getpid()}
    write_new(results / f"rank{rank}.start.json", json.dumps(start))
    stacks = open_new(results / f"stacks{rank}.txt")
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    faulthandler.enable(all_threads=True)  # a rank dying on SIGSEGV/SIGABRT leaves its stack in the node log
    module_name, func_name = args.target.split(":")
    try:
        code = int(getattr(importlib.import_module(module_name), func_name)(rest) or 0)
    except BaseException:  # noqa: BLE001 - the launcher needs the traceback and the node
        write_new(results / f"rank{rank}.err", f"rank {rank} on node {args.node_name}:\n{traceback.format_exc()}")
        return 1
    if code:
        write_new(results / f"rank{rank}.err", f"rank {rank} on node {args.node_name}: exited with code {code}")
    return code


if __name__ == "__main__":
    from llmcomm_tests.runtime.launch import exit_rank

    exit_rank(main())
