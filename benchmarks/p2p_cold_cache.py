"""Why the engine's send ran slower than the calibrated model: the caches the compute before it leaves.

    python benchmarks/p2p_cold_cache.py [--sends 200] [--rounds 3]

Two gloo ranks: rank 0 computes for 1.5 ms, then sends 16 B to rank 1, which idles in its recv (as
a pipeline stage waits for the sampled tokens).  The compute is either a cache-resident 64x64 matmul
(what `bench-comm --compute-ms` did) or a matrix-vector product reading N MiB of weights (as a decode
step reads its layers; `--compute-mb N`).  Printed per condition and round: the send's median time
without the recorder, with it (its own stamps around dist.send), and the recorder's span: the
recorder's cost shows as the second minus the first, the caches' as the rows' difference.
"""

from __future__ import annotations

import argparse
import statistics
import time

from llmcomm_tests.runtime.launch import launch

CONDITIONS = ((0, "64x64 matmul (cache-resident)"), (4, "reads 4 MiB of weights"), (16, "reads 16 MiB of weights"))


def send_rank(ctx, sends: int, rounds: int, compute_ms: float, compute_mb: float):
    import torch
    import torch.distributed as dist

    from llmcomm_tests.calibration.sweep import compute_between_calls
    from llmcomm_tests.runtime.recorder import Recorder

    compute = compute_between_calls(compute_ms, compute_mb)  # the calibration's own compute
    tokens = torch.zeros(2, dtype=torch.int64)

    def one_round(recorder=None):
        own = []
        for _ in range(sends):
            if ctx.rank == 0:
                compute()
                t0 = time.perf_counter_ns()
                dist.send(tokens, 1)
                own.append(time.perf_counter_ns() - t0)
            else:
                dist.recv(tokens, 0)
        spans = [r.end_ns - r.start_ns for r in recorder.records if r.op == "send"] if recorder else []
        return own, spans

    one_round()  # connections up
    dist.barrier()
    results = []
    for _ in range(rounds):
        plain, _ = one_round()
        recorder = Recorder().install()
        recorder.active = True
        recorded, spans = one_round(recorder)
        recorder.uninstall()
        results.append((plain, recorded, spans))
    return results if ctx.rank == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sends", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import p2p_cold_cache  # the rank entry must be importable by module name, not __main__

    us = lambda xs: f"{statistics.median(xs) / 1e3:.1f}"
    print("compute before each send            round  send (no recorder) us  send (recorded) us  recorder span us")
    for mb, label in CONDITIONS:
        rounds = launch(p2p_cold_cache.send_rank, (args.sends, args.rounds, 1.5, mb), world_size=2, backend="gloo")[0]
        for k, (plain, recorded, spans) in enumerate(rounds):
            print(f"{label:<36}{k:>5}  {us(plain):>21}  {us(recorded):>18}  {us(spans):>16}")


if __name__ == "__main__":
    main()
