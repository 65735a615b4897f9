"""Clock offsets between ranks on different hosts, for the wait/transfer split (``runtime/arrival.py``).

Ranks on one host share the monotonic clock.  Across hosts each rank's clock has its own zero, so
before a run rank 0 plays ping-pong with every other rank: rank 0 sends at t0 (its clock), the
rank stamps the arrival tr (its clock) and answers, rank 0 receives at t1.  If the two legs take
equally long, the rank's clock reads ``offset = tr − (t0 + t1) / 2`` ahead of rank 0's; the legs
may differ by up to the round trip, so the offset is known to ± (t1 − t0) / 2.  Of several rounds
the one with the shortest round trip is kept (Cristian's algorithm, as NTP filters its samples).
"""

from __future__ import annotations

import time

ROUNDS = 16


def estimate_offsets(rounds: int = ROUNDS, clock=time.perf_counter_ns, group=None) -> dict[int, tuple[int, int]] | None:
    """On rank 0: ``{rank: (offset_ns, error_ns)}`` for every rank (rank 0: (0, 0)); None elsewhere.
    Every rank must call it (it is a sequence of send/recv with rank 0).  The stamps are CPU
    tensors: ``group`` must take them, so on NCCL pass the gloo side group (``RankContext.host_group``);
    None is the default group (gloo)."""
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    stamp = torch.zeros(1, dtype=torch.int64)
    if rank != 0:
        for _ in range(rounds):
            dist.recv(stamp, 0, group=group)
            stamp[0] = clock()
            dist.send(stamp, 0, group=group)
        return None
    out = {0: (0, 0)}
    for peer in range(1, world):
        best = None
        for _ in range(rounds):
            t0 = clock()
            dist.send(stamp, peer, group=group)
            dist.recv(stamp, peer, group=group)
            t1 = clock()
            rtt = t1 - t0
            if best is None or rtt < best[1]:
                best = (int(stamp.item()) - (t0 + t1) // 2, rtt)
        out[peer] = (best[0], best[1] // 2)
    return out
