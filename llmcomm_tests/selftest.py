"""Rank entry points with planted faults, for the launcher's own tests and for users who want to
see how a crash or a hang is reported before they trust a gate."""

from __future__ import annotations

import os
import time


def echo(ctx, payload=None):
    """All-reduce the rank ids (proves the group works) and return what the rank saw."""
    import torch
    import torch.distributed as dist

    x = torch.tensor([float(ctx.rank)])
    if ctx.world_size > 1:
        dist.all_reduce(x)
    return {"rank": ctx.rank, "sum": x.item(), "pid": os.getpid(), "payload": payload}


def crash(ctx, bad_rank: int = 1):
    if ctx.rank == bad_rank:
        raise RuntimeError(f"planted crash on rank {ctx.rank}")
    return echo(ctx)


def hang(ctx, bad_rank: int = 1, seconds: float = 3600):
    if ctx.rank == bad_rank:
        time.sleep(seconds)
    return echo(ctx)


def die(ctx, bad_rank: int = 1):
    if ctx.rank == bad_rank:
        os._exit(7)
    return echo(ctx)
