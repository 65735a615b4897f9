"""Wait versus transfer: each call's time split at the last arrival of its peers.

A call's time on one rank (issue → completion) is the *wait* for the last member of its group to
arrive plus the *transfer* after that; the α-β model describes the transfer only (docs/calibration.md).

Matching.  Every rank issues the calls of one group in the same order, so the k-th call a rank
makes on a group (its *channel*) is the k-th call of every other member: the instance is
(channel, k).  A collective's channel is its group; a send's is (sender → receiver), matched with
the receiver's recv from that sender.  The last arrival is the latest issue time among the
instance's members; a member's wait is last arrival − its own issue, its transfer is its completion
− last arrival (clipped at 0: a rank that finishes before the last one arrives — a broadcast root —
transferred nothing after it).

Clocks.  On one host every rank reads the same monotonic clock (``perf_counter_ns``).  Across hosts
the ranks' clocks differ by an offset; ``offsets_ns`` (per global rank, from a start-up ping-pong)
moves every rank onto rank 0's clock, and ``offset_error_ns`` (half the best round trip) is carried
into the split: waits and transfers shorter than it are not told apart from zero.  Calls timed on
the device (CUDA events) are not split: their durations are not on the host clock; their kernels
are, on one host (``runtime/kernel_timing.py`` re-times the calls and splits them here).
"""

from __future__ import annotations

import numpy as np

from llmcomm_tests.core.documents import RankOps

P2P = ("send", "recv")


def channels(rank_ops: list[RankOps]) -> tuple[list, np.ndarray]:
    """Per rank, the channel id of every call (-1: not matched, e.g. a group of one rank), and per
    channel the calls one instance takes (the group size, or 2 for a send/recv pair)."""
    table: dict[tuple, int] = {}
    members: list[int] = []
    out = []
    for ops in rank_ops:
        per_class = np.full(len(ops.classes), -1, np.int64)
        for i, c in enumerate(ops.classes):
            if c.op in P2P and c.peer is not None:
                key, size = (("p2p", ops.rank, c.peer) if c.op == "send" else ("p2p", c.peer, ops.rank)), 2
            elif c.op not in P2P and len(c.group) > 1:
                key, size = ("group", c.group), len(c.group)
            else:
                continue
            if key not in table:
                table[key] = len(table)
                members.append(size)
            per_class[i] = table[key]
        out.append(per_class[ops.cls] if len(ops.cls) else np.empty(0, np.int64))
    return out, np.array(members, np.int64)


def _sequence(channel: np.ndarray, start_ns: np.ndarray) -> np.ndarray:
    """k for every call: how many calls this rank issued on the same channel before it."""
    order = np.lexsort((start_ns, channel))
    sorted_channel = channel[order]
    first = np.searchsorted(sorted_channel, sorted_channel, side="left")
    seq = np.empty(len(channel), np.int64)
    seq[order] = np.arange(len(channel)) - first
    return seq


def split(rank_ops: list[RankOps], offsets_ns: dict[int, int] | None = None,
          offset_error_ns: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per rank, (wait_s, transfer_s) of every call; NaN where a call was not matched with all its
    peers, was not timed, or was timed on the device."""
    chans, expected = channels(rank_ops)
    keys, starts, ends, where = [], [], [], []
    for r, (ops, chan) in enumerate(zip(rank_ops, chans)):
        offset = (offsets_ns or {}).get(ops.rank, 0)
        ok = (chan >= 0) & ~np.isnan(ops.duration_s) & (not ops.device_timed)
        seq = _sequence(chan, ops.start_ns)
        idx = np.flatnonzero(ok)
        keys.append(np.stack([chan[idx], seq[idx]], axis=1))
        start = ops.start_ns[idx] - offset
        starts.append(start)
        ends.append(start + (ops.duration_s[idx] * 1e9).astype(np.int64))
        where.append((r, idx))
    out = [(np.full(len(ops), np.nan), np.full(len(ops), np.nan)) for ops in rank_ops]
    if not keys or not sum(len(k) for k in keys):
        return out
    all_keys = np.concatenate(keys)
    all_starts, all_ends = np.concatenate(starts), np.concatenate(ends)
    instances, inverse, members = np.unique(all_keys, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.reshape(-1)
    last = np.full(len(instances), np.iinfo(np.int64).min)
    np.maximum.at(last, inverse, all_starts)
    complete = members[inverse] == expected[instances[:, 0]][inverse]
    arrival = last[inverse]
    wait = (arrival - all_starts) / 1e9
    transfer = np.maximum(all_ends - arrival, 0) / 1e9
    if offset_error_ns:  # below the clocks' agreement a split says nothing
        wait = np.where(wait * 1e9 < offset_error_ns, 0.0, wait)
    wait[~complete] = np.nan
    transfer[~complete] = np.nan
    pos = 0
    for r, idx in where:
        n = len(idx)
        out[r][0][idx] = wait[pos:pos + n]
        out[r][1][idx] = transfer[pos:pos + n]
        pos += n
    return out
