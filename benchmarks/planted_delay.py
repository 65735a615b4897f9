"""Planted slowdowns, planted vs measured: does ``delay=5%`` add what it says to the op's transfer?

    PYTHONPATH=. python benchmarks/planted_delay.py [--layouts 2x1,1x2,2x2] [--levels aa,0,5,10,20]
                                                    [--rounds 20] [--gen-len 8] [--quantile 50]

1. The fault wrappers alone: ns per call of an all-reduce whose issue returns an already completed
   Work (gloo's own ~20 µs and its jitter out of the figure), through the (idle) recorder, plain vs
   with ``delay=0%`` armed.
2. Per layout (tiny engine, gloo, one launch): every level's fault is installed, each armed in its
   own repetitions, round-robin with clean ones (same processes, same drift).  The faulted op
   class's decode calls (TP: all_reduce; PP: the send/recv pair, the fault named ``send``): the
   median transfer (``runtime/arrival.py``) of each level minus the clean repetition's of the
   same round, the median over rounds (paired: the host's drift between rounds cancels), next to
   what was planted (the model's transfer × level, ``runtime/fault_spec.py``), both in µs and as
   a share of the clean median, with the middle half of the rounds' differences (the spread), the
   95 % interval of their median (the resolution: ``delay=0%`` is within ± 2 % where it lies
   inside ± 2 %) and the host's load average.  Level ``aa`` arms nothing (no fault installed): the
   same estimate of clean against clean, what a change of zero reads as here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from types import SimpleNamespace

import numpy as np

from llmcomm_tests.core.stats import median_ci
from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.runtime import arrival
from llmcomm_tests.runtime.fault_spec import model_transfer, parse_fault
from llmcomm_tests.runtime.launch import launch


def hook_rank(ctx, n: int = 2000, blocks: int = 41) -> dict:
    """Recorded in ns per (issue + wait): plain, and through an armed ``delay=0%`` fault."""
    import torch
    import torch.distributed as dist

    from llmcomm_tests.core import call_site
    from llmcomm_tests.runtime.faults import install_faults
    from llmcomm_tests.runtime.pg_patch import PgPatch
    from llmcomm_tests.runtime.recorder import Recorder

    if not dist.is_initialized():  # the launcher makes no group for one rank
        import tempfile

        dist.init_process_group("gloo", init_method=f"file://{tempfile.mktemp()}", rank=0, world_size=1)
    pg, x = dist.group.WORLD, [torch.ones(16)]
    done = pg.allreduce(x)
    done.wait()
    stub = PgPatch()
    stub.wrap_method("allreduce", lambda original: lambda _pg, *_a, **_k: done)  # issue = a completed Work
    recorder = Recorder().install()  # off: what is timed is the faults' own path, held by its wait
    armed = SimpleNamespace(active=True)
    call_site.set_phase("decode", 1)

    def timed() -> float:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            pg.allreduce(x).wait()
        return (time.perf_counter_ns() - t0) / n

    diffs = []
    for _ in range(blocks):
        plain = timed()
        installed = install_faults([parse_fault("all_reduce:delay=0%")], armed, held_by=recorder)
        faulty = timed()
        installed.uninstall()
        diffs.append(faulty - plain)
    recorder.uninstall()
    stub.restore()
    return {"cost_ns": statistics.median(diffs), "p10_ns": sorted(diffs)[len(diffs) // 10],
            "fired": installed.fired}


def layout_rank(ctx, layout: Layout, levels: list[float | None], ops: list[str], rounds: int, gen_len: int) -> dict:
    import torch
    import torch.distributed as dist

    from llmcomm_tests.engine.parallel import ParallelEngine
    from llmcomm_tests.runtime.faults import install_faults
    from llmcomm_tests.runtime.recorder import Recorder

    engine = ParallelEngine(PRESETS["tiny"], layout, ctx.rank, max_len=32 + gen_len)
    prompt = torch.randint(0, PRESETS["tiny"].vocab, (1, 32), generator=torch.Generator().manual_seed(1))
    arms = [SimpleNamespace(active=False) for _ in levels]
    recorder = Recorder().install()  # as runtime/measure.py installs a slowdown: over the recorder, held by it
    installs = [install_faults([] if lvl is None else [parse_fault(f"{op}/decode:delay={lvl:g}%") for op in ops], arm,
                               held_by=recorder) for lvl, arm in zip(levels, arms)]
    engine.generate(prompt, gen_len)
    arms_by_rep = [None] + arms  # rep 0: clean, rep i: levels[i - 1]
    for r in range(rounds):
        for k in range(len(arms_by_rep)):
            rep = (k + r) % len(arms_by_rep)  # rotate the order: no level always follows another
            dist.barrier()
            recorder.rep, recorder.active = r * len(arms_by_rep) + rep, True
            if arms_by_rep[rep] is not None:
                arms_by_rep[rep].active = True
            engine.generate(prompt, gen_len)
            recorder.active = False
            if arms_by_rep[rep] is not None:
                arms_by_rep[rep].active = False
    ops_done = recorder.finalize(ctx.rank)
    for installed in reversed(installs):
        installed.uninstall()
    recorder.uninstall()
    return {"ops": ops_done, "fired": [i.fired for i in installs]}


def layout_rows(layout: Layout, levels: list[float | None], rounds: int, gen_len: int, profile, q: float = 50
                ) -> list[tuple]:
    ops = (["all_reduce"] if layout.tp > 1 else []) + (["send"] if layout.pp > 1 else [])
    import planted_delay

    per_rank = launch(planted_delay.layout_rank, (layout, levels, ops, rounds, gen_len), world_size=layout.world_size,
                      timeout_s=600)
    rank_ops = [r["ops"] for r in per_rank]
    splits = arrival.split(rank_ops)
    classes = ["all_reduce"] * (layout.tp > 1) + ["send", "recv"] * (layout.pp > 1)
    rows = []
    for op in classes:
        # transfers by (round, level): a level's change is the median over rounds of its median
        # minus the clean repetition's of the same round (paired: drift between rounds cancels)
        by_cell: dict[tuple[int, int], list[float]] = {}
        model = []
        for ops, (_, transfer) in zip(rank_ops, splits):
            for i, c in enumerate(ops.classes):
                if c.op != op or c.phase != "decode":
                    continue
                rows_of = np.flatnonzero(ops.cls == i)
                for row in rows_of:
                    if not np.isnan(transfer[row]):
                        by_cell.setdefault(divmod(int(ops.rep[row]), len(levels) + 1), []).append(transfer[row])
                span = sorted({ops.rank, c.peer}) if op in ("send", "recv") else list(c.group)
                model.append(model_transfer(profile, op, span, c.bytes)[0])
        model_s = statistics.median(model)
        def centre(r: int, k: int) -> float:
            return float(np.percentile(by_cell[(r, k)], q))

        clean = statistics.median(centre(r, 0) for r in range(rounds))
        for k, lvl in enumerate(levels, start=1):
            diffs = [centre(r, k) - centre(r, 0) for r in range(rounds)]
            calls = sum(len(by_cell[(r, k)]) for r in range(rounds))
            diffs.sort()
            spread = (diffs[len(diffs) // 4], diffs[(3 * len(diffs)) // 4])  # the middle half of the rounds
            interval = median_ci(diffs) or (float("nan"), float("nan"))  # of the median difference
            rows.append((str(layout), op, "A/A" if lvl is None else f"delay={lvl:g}%", calls, clean,
                         model_s * (lvl or 0) / 100,
                         statistics.median(diffs), spread, interval))
    fired = [sum(f[i][key] for f in (r["fired"] for r in per_rank) for key in f[i]) for i in range(len(levels))]
    if not all(n for n, lvl in zip(fired, levels) if lvl is not None):
        raise RuntimeError(f"{layout}: a level planted nothing (fired {fired})")
    return rows


def main() -> None:
    from llmcomm_tests.analytic.hardware import load_profile

    parser = argparse.ArgumentParser()
    parser.add_argument("--layouts", default="2x1,1x2,2x2")
    parser.add_argument("--levels", default="aa,0,5,10,20", help="%% of the model's transfer; aa: nothing armed")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--gen-len", type=int, default=8)
    parser.add_argument("--quantile", type=float, default=50,
                        help="each round's centre: the median (50) or e.g. the A/B gate's lower quartile (25)")
    args = parser.parse_args()
    levels = [None if v == "aa" else float(v) for v in args.levels.split(",")]
    import planted_delay  # the rank entries must be importable by module name, not __main__

    hook = launch(planted_delay.hook_rank, world_size=1)[0]
    print(f"fault wrappers alone (issue + wait, delay=0% armed): {hook['cost_ns']:.0f} ns/call "
          f"(p10 {hook['p10_ns']:.0f})")
    profile = load_profile("cpu-loopback")
    print(f"\ntiny engine, gloo, {args.rounds} rounds of clean + {len(levels)} levels, decode calls, "
          f"planted = model transfer x level (cpu-loopback)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    head = ("layout", "op", "fault", "calls", f"clean q{args.quantile:g} us", "planted us", "measured us", "rounds q25..q75",
            "planted %", "measured %", "95% interval %")
    print("  ".join(f"{h:>12s}" for h in head))
    t0 = time.perf_counter()
    for text in args.layouts.split(","):
        for layout_, op, name, n, clean, planted, measured, (lo, hi), (low, high) in layout_rows(
                Layout.parse(text), levels, args.rounds, args.gen_len, profile, args.quantile):
            cells = (layout_, op, name, str(n), f"{clean * 1e6:.1f}", f"{planted * 1e6:.1f}",
                     f"{measured * 1e6:+.1f}", f"{lo * 1e6:+.0f}..{hi * 1e6:+.0f}", f"{planted / clean:+.1%}",
                     f"{measured / clean:+.1%}", f"{low / clean:+.1%}..{high / clean:+.1%}")
            print("  ".join(f"{c:>12s}" for c in cells), flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
