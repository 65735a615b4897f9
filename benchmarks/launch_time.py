"""Launch-to-first-collective time: our fork-server launcher vs a plain spawn, W = 2, 4, 8.

    python benchmarks/launch_time.py [--repeats 3]

Time from the call until every rank has finished one all-reduce (the result is back in the caller).
The first launch of a session starts the fork server (torch imported once); later launches fork.
"""

import argparse
import statistics
import time

import torch.multiprocessing as mp

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the launcher tests' rank entry points
import rank_entries  # noqa: E402
from llmcomm_tests.runtime.launch import launch


def spawn_rank(rank, world_size, path, queue):
    """The plain way: every rank a fresh interpreter importing torch (torch.multiprocessing.spawn)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world_size)
    x = torch.ones(1)
    dist.all_reduce(x)
    queue.put(x.item())
    dist.destroy_process_group()


def plain_spawn(world_size: int) -> float:
    import tempfile

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    path = tempfile.mktemp(prefix="llmcomm-bench-")
    t0 = time.perf_counter()
    mp.start_processes(spawn_rank, args=(world_size, path, queue), nprocs=world_size, start_method="spawn")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    t0 = time.perf_counter()
    launch(rank_entries.echo, world_size=2)
    print(f"first launch of the session (starts the fork server): {time.perf_counter() - t0:.2f} s")
    print(f"{'W':>3} {'fork server median (s)':>24} {'min':>7} {'plain spawn median (s)':>24} {'min':>7}")
    for world_size in (2, 4, 8):
        ours, plain = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            launch(rank_entries.echo, world_size=world_size)
            ours.append(time.perf_counter() - t0)
            plain.append(plain_spawn(world_size))
        print(f"{world_size:>3} {statistics.median(ours):>24.3f} {min(ours):>7.3f} "
              f"{statistics.median(plain):>24.3f} {min(plain):>7.3f}")


if __name__ == "__main__":
    main()
