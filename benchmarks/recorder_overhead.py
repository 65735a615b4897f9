"""Recorder cost: ns per recorded op, and its share of TPOT, against the same run uninstrumented.

    python benchmarks/recorder_overhead.py

1. Per op: a one-rank gloo group (the all-reduce is almost free, so the hook's cost shows),
   alternating blocks of calls plain vs recorded, median and p10 of the paired differences; and
   the hook alone (the recorder's wrappers around an already completed Work).
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


def per_op(n: int = 500, blocks: int = 61) -> dict[str, float]:
    """ns per op: plain vs recorded 1-rank gloo all_reduce in alternating blocks of ``n`` calls
    (each pair of blocks sees the same host load), and the hook alone: the recorder's wrappers
    around an original that returns an already completed Work, so gloo's own ~20 µs and its
    jitter are out of the figure.  Returns medians and p10s over the blocks."""
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
    for _ in range(blocks):
        plain.append(timed(False))
        recorded.append(timed(True))
    recorder.uninstall()
    hook = _hook_only(n, blocks)
    dist.destroy_process_group()
    diff = sorted(r - p for p, r in zip(plain, recorded))
    return {"plain": statistics.median(plain), "recorded": statistics.median(recorded),
            "cost": statistics.median(diff), "cost_p10": diff[len(diff) // 10],
            "hook": statistics.median(hook), "hook_p10": sorted(hook)[len(hook) // 10]}


def _hook_only(n: int, blocks: int) -> list[float]:
    """Recorded minus plain ns per (issue + wait) through the recorder's own wrappers."""
    pg = dist.group.WORLD
    x = [torch.ones(16)]
    done = pg.allreduce(x)
    done.wait()
    issue, wait = (lambda _pg, *_a, **_k: done), type(done).wait
    recorder = Recorder()
    recorded_issue = recorder._wrap_method("allreduce", "all_reduce", "tensors", issue)
    recorded_wait = recorder._wrap_wait(wait)

    def timed(call, wait_call) -> float:
        recorder.records.clear()
        t0 = time.perf_counter_ns()
        for _ in range(n):
            wait_call(call(pg, x))
        return (time.perf_counter_ns() - t0) / n

    recorder.active = True
    out = []
    for _ in range(blocks):
        plain = timed(issue, wait)
        out.append(timed(recorded_issue, recorded_wait) - plain)
    assert len(recorder.records) == n and recorder.records[0].end_ns  # the hook really recorded
    return out


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
    op = per_op()
    print(f"per op (1-rank gloo all_reduce, median of blocks): plain {op['plain'] / 1e3:.2f} us, "
          f"recorded {op['recorded'] / 1e3:.2f} us, recorder cost {op['cost']:.0f} ns/op (p10 {op['cost_p10']:.0f})")
    print(f"recorder hook alone (issue + wait wrappers): {op['hook']:.0f} ns/op (p10 {op['hook_p10']:.0f})")
    import recorder_overhead  # the rank entry must be importable by module name, not __main__

    result = launch(recorder_overhead.tpot_rank, world_size=2)[0]
    p, r = statistics.median(result["plain"]), statistics.median(result["recorded"])
    cost = op["cost"]
    hook = cost * 1e-9 * result["ops_per_token"]
    print(f"TPOT tiny TP2 (median of {len(result['plain'])}): plain {p * 1e3:.3f} ms, recorded {r * 1e3:.3f} ms, "
          f"difference {(r - p) / p:+.2%} (noise-level on this host)")
    print(f"recorder cost per token from the per-op cost: {result['ops_per_token']:.0f} ops x "
          f"{cost:.0f} ns = {hook * 1e6:.1f} us = {hook / p:.3%} of TPOT")


if __name__ == "__main__":
    main()
