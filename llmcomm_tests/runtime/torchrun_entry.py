"""Rank-side entry point for torchrun (multi-node runs use torchrun's rendezvous, not ours):

    torchrun --nnodes 2 --nproc-per-node 4 ... -m llmcomm_tests.runtime.torchrun_entry --engine llama-3.1-8b --tp 4 --pp 2 \\
        --json out.json

Every rank runs the same code as under ``llmcomm run``; rank 0 gathers the others' records over
the process group and writes the run document.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist

from llmcomm_tests.core.arguments import OneLineParser
from llmcomm_tests.core.documents import write_json
from llmcomm_tests.runtime.clocks import estimate_offsets
from llmcomm_tests.runtime.launch import exit_rank, init_rank, resolve_backend, teardown_rank
from llmcomm_tests.runtime.measure import assemble, rank_run, run_summary
from llmcomm_tests.runtime.run_config import RunConfig, add_arguments


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m llmcomm_tests.runtime.torchrun_entry")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg = RunConfig.from_arguments(args)
    except ValueError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if world != cfg.layout.world_size:
        print(f"WORLD_SIZE={world} but tp*pp={cfg.layout.world_size}", file=sys.stderr)
        return 2
    backend = resolve_backend(args.backend, int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    ctx = init_rank(rank, world, int(os.environ.get("LOCAL_RANK", rank)), backend, None, args.timeout)
    try:
        # Hosts do not share a clock: measure the offsets before the run (rank 0 gets them).
        # The stamps and the gathered results are host objects: on NCCL they go over the gloo side group.
        multi_host = int(os.environ.get("LOCAL_WORLD_SIZE", world)) < world
        offsets = estimate_offsets(group=ctx.host_group) if multi_host else None
        result = rank_run(ctx, cfg)
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(result, gathered, dst=0, group=ctx.host_group)
        if rank == 0:
            doc = assemble(cfg, backend, gathered, offsets)
            print(run_summary(doc))
            if args.json_path:
                write_json(doc, args.json_path)
    finally:
        teardown_rank()
    return 0


if __name__ == "__main__":
    exit_rank(main())
