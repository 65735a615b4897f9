"""Recorder cost: ns per recorded op, and its share of TPOT, against the same run uninstrumented.

    python benchmarks/recorder_overhead.py

1. Per op: a one-rank gloo group (the all-reduce is almost free, so the hook's cost shows),
   N calls plain vs N calls recorded; interleaved rounds, median of rounds.
2. Per token: the tiny engine under TP 2 on 2 ranks, TPOT with the recorder active vs installed
   but inactive (the plain path) — same processes, alternating repetitions.
"""

import statistics
import tempfile
import time

import torch
import torch.distributed as dist

from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.runtime.launch import launch
from llmcomm_tests.runtime.recorder import Recorder


def per_op(n: int = 20000, rounds: int = 7) -> tuple[float, float]:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tempfile.mktemp()}", rank=0, world_size=1)
    x = torch.ones(16)
    recorder = Recorder().install()

    def timed(active: bool) -> float:
        recorder.active = active
        recorder.records.clear()
        t0 = time.perf_counter_ns()
        for _ in range(n):
            dist.all_reduce(x)
        return (time.perf_counter_ns() - t0) / n

    plain, recorded = [], []
    for _ in range(rounds):
        plain.append(timed(False))
        recorded.append(timed(True))
    recorder.uninstall()
    dist.destroy_process_group()
    return statistics.median(plain), statistics.median(recorded)


def tpot_rank(ctx, rounds: int = 15):
    from llmcomm_tests.engine.parallel import ParallelEngine

    engine = ParallelEngine(PRESETS["tiny"], Layout(2, 1), ctx.rank)
    prompt = torch.randint(0, 1024, (1, 32), generator=torch.Generator().manual_seed(1))
    recorder = Recorder().install()
    engine.generate(prompt, 16)
    tpots = {False: [], True: []}
    for i in range(2 * rounds):
        active = bool(i % 2)
        dist.barrier()
        recorder.active = active
        gen = engine.generate(prompt, 16)
        recorder.active = False
        if gen is not None:
            t = gen.token_times_s
            tpots[active].append((t[-1] - t[0]) / 15)
    n_ops = sum(1 for r in recorder.records if r.phase == "decode") / rounds / 15
    return {"plain": tpots[False], "recorded": tpots[True], "ops_per_token": n_ops}


def main() -> None:
    plain, recorded = per_op()
    print(f"per op (1-rank gloo all_reduce): plain {plain / 1e3:.2f} us, recorded {recorded / 1e3:.2f} us, "
          f"recorder cost {(recorded - plain):.0f} ns/op")
    import recorder_overhead  # the rank entry must be importable by module name, not __main__

    result = launch(recorder_overhead.tpot_rank, world_size=2)[0]
    p, r = statistics.median(result["plain"]), statistics.median(result["recorded"])
    hook = (recorded - plain) * 1e-9 * result["ops_per_token"]
    print(f"TPOT tiny TP2 (median of {len(result['plain'])}): plain {p * 1e3:.3f} ms, recorded {r * 1e3:.3f} ms, "
          f"difference {(r - p) / p:+.2%} (noise-level on this host)")
    print(f"recorder cost per token from the per-op cost: {result['ops_per_token']:.0f} ops x "
          f"{(recorded - plain):.0f} ns = {hook * 1e6:.1f} us = {hook / p:.3%} of TPOT")


if __name__ == "__main__":
    main()
