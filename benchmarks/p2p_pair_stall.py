"""The second of two back-to-back sends: the pipeline boundary's pair, which no calibration sweeps.

    python benchmarks/p2p_pair_stall.py [--steps 200] [--sizes 1024,32768,131072] [--rounds 3]

A PP stage hands its successor two tensors at once (``engine/parallel.py``: hidden state and
residual), and the successor receives them one after the other.  Two gloo ranks do the same per step:
rank 0 computes 2 ms and sends two messages, and rank 1 receives both.  Then rank 1 computes 2 ms
and returns a token, while rank 0 idles in its recv.  Printed per size and round: each recv's
*transfer* (completion minus the later of the two posts, as ``runtime/arrival.py`` splits the engine's records),
p50 / p90 / max.  The calibration (``bench-comm --compute-ms``) sends one message per call: its fit
describes the first recv of the pair, not the second.  What it found, next to the engine's PP2
boundary recvs: docs/calibration.md, "The shipped CPU spec's margins".
"""

from __future__ import annotations

import argparse
import time

from llmcomm_tests.runtime.launch import launch
from llmcomm_tests.core.stats import percentile


def pair_rank(ctx, nbytes: int, steps: int, warmup: int):
    import torch
    import torch.distributed as dist

    from llmcomm_tests.calibration.sweep import compute_between_calls

    compute = compute_between_calls(2.0)
    first, second, token = torch.zeros(nbytes // 4), torch.zeros(nbytes // 4), torch.zeros(2, dtype=torch.int64)
    clock = time.perf_counter_ns
    stamps = []
    for _ in range(warmup + steps):
        if ctx.rank == 0:
            compute()
            t0 = clock()
            dist.send(first, 1)
            t1 = clock()
            dist.send(second, 1)
            stamps.append((t0, t1, clock()))
            dist.recv(token, 1)
        else:
            t0 = clock()
            dist.recv(first, 0)
            t1 = clock()
            dist.recv(second, 0)
            stamps.append((t0, t1, clock()))
            compute()
            dist.send(token, 0)
    return stamps[warmup:]


def transfers(sender, receiver) -> tuple[list[float], list[float]]:
    """Each recv's completion minus the later post of its pair (µs): the first and the second."""
    first = [(r[1] - max(r[0], s[0])) / 1e3 for s, r in zip(sender, receiver)]
    second = [(r[2] - max(r[1], s[1])) / 1e3 for s, r in zip(sender, receiver)]
    return first, second


def quantiles(values: list[float]) -> str:
    return " ".join(f"{percentile(values, q):7.0f}" for q in (50, 90, 100))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--sizes", default="1024,32768,131072", help="bytes per message, comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="separate launches per size")
    args = parser.parse_args()
    import p2p_pair_stall  # the rank entry must be importable by module name, not __main__

    print("transfer of each recv of the pair (µs): p50 p90 max")
    print(f"{'bytes':>7} {'round':>5}  {'first recv':>23}  {'second recv':>23}")
    for nbytes in (int(s) for s in args.sizes.split(",")):
        for k in range(args.rounds):
            sender, receiver = launch(p2p_pair_stall.pair_rank, (nbytes, args.steps, 10), world_size=2, backend="gloo", timeout_s=300)
            first, second = transfers(sender, receiver)
            print(f"{nbytes:>7} {k + 1:>5}  {quantiles(first)}  {quantiles(second)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
