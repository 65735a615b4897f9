"""The probe's rows for several ranks on one GPU, and its prediction of the 8-GPU suite's weight time
(run by benchmarks/gpu_check.py; ``--dry-run`` runs the same code on gloo/CPU).

Ranks sharing one GPU (``LLMCOMM_SHARE_GPU=1``, docs/measurements.md#ranks-sharing-one-gpu) are
time-sliced: these rows show function, never timing.

* TP2, PP2, TP2×PP2 of ``tiny`` (fp32): tokens against the same RunConfig on gloo/CPU, volume rows
  against the analytic model, every call timed by its kernel (no NaN transfer), the profiler's
  count of every op (its event names) against the recorder's.
* A rank made late: rank 1 sleeps before every other all_reduce; the early rank's kernel-timed wait
  must take the delay, its transfer must not.
* Weight generation: one rank's shard of llama-3.1-8b at tp=8 drawn here (globals and one layer),
  seconds per random number, times the numbers each 8-GPU case's slowest rank draws, summed over the
  cases of the 8-GPU specs (ranks of a case draw in parallel, cases one after another).
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SUITE_SPECS = ("study-llama-2-13b-8gpu.yaml", "study-llama-3.1-8b-8gpu.yaml", "study-llama-3.2-3b-8gpu.yaml",
               "deploy-llama-3.1-8b.yaml")
SHARED_LAYOUTS = ((2, 1), (1, 2), (2, 2))
LATE_S = 5e-3
LEASE_S = 30 * 60  # an 8-GPU machine is lent for 30 minutes: the suite's weights must leave time to run it


def placement(ranks: int, backend: str) -> str:
    return f"{ranks} ranks sharing GPU 0" if backend == "nccl" else f"{ranks} ranks on gloo/CPU (dry run)"


def check_row(check: str, measured: str, expect: str, ok: bool | None) -> tuple[str, str, str, str]:
    """A table row; ``ok`` None: information, no verdict."""
    return check, measured, expect, "info" if ok is None else ("PASS" if ok else "FAIL")


@contextlib.contextmanager
def sharing_one_gpu():
    """The launcher reads ``LLMCOMM_SHARE_GPU`` in this process when it starts ranks."""
    from llmcomm_tests.runtime.launch import SHARE_GPU_ENV

    saved = os.environ.get(SHARE_GPU_ENV)
    os.environ[SHARE_GPU_ENV] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ[SHARE_GPU_ENV]
        else:
            os.environ[SHARE_GPU_ENV] = saved


def layout_rows(tp: int, pp: int, backend: str, timeout_s: float) -> list[tuple]:
    """One layout of ``tiny`` on ``backend`` with its ranks sharing GPU 0, against gloo/CPU."""
    from llmcomm_tests.analytic.volume import predict_volume
    from llmcomm_tests.core.documents import to_json
    from llmcomm_tests.engine.config import PRESETS
    from llmcomm_tests.engine.layout import Layout
    from llmcomm_tests.runtime.measure import run_engine
    from llmcomm_tests.runtime.run_config import RunConfig

    cfg = RunConfig(PRESETS["tiny"], Layout(tp, pp), batch=2, prompt_len=8, gen_len=3, dtype="fp32", repeats=1,
                    warmup=1, keep_records=True, cross_check=True, comm_timing="profiler")
    name = f"tiny tp{tp}×pp{pp} fp32, {placement(tp * pp, backend)}"
    t0 = time.perf_counter()
    with sharing_one_gpu():
        doc = run_engine(cfg, backend=backend, timeout_s=timeout_s)
    wall = time.perf_counter() - t0
    reference = run_engine(replace(cfg, cross_check=False, comm_timing="host"), backend="gloo", timeout_s=timeout_s)
    rows = [check_row(name, f"ran in {wall:.0f} s (function only: no timing from shared ranks)", "-", None)]

    same = doc.tokens == reference.tokens
    rows.append(check_row("  tokens == gloo/CPU, same RunConfig", f"{'same' if same else 'differ'}: "
                          f"{doc.tokens[0]} vs {reference.tokens[0]}", "same (greedy, fp32)", same))

    predicted = predict_volume(cfg.engine, cfg.layout, cfg.batch, cfg.prompt_len, cfg.gen_len, cfg.dtype)
    recorded = [to_json(r) for r in doc.volume]
    differ = sum(a != b for a, b in zip(recorded, predicted)) + abs(len(recorded) - len(predicted))
    total = sum(r["bytes"] for r in recorded)
    rows.append(check_row("  volume rows == analytic model", f"{len(recorded)} rows, {total} B, {differ} differ",
                          "0 differ", differ == 0 and bool(predicted)))

    records = doc.records or []
    untimed = sum(1 for r in records if r.transfer_s is None or math.isnan(r.transfer_s))
    timing = doc.comm_timing
    kernel_timed = timing is not None and timing.source == "kernels" and not timing.mismatches
    rows.append(check_row("  every call kernel-timed (--comm-timing profiler)",
                          f"{timing.timed_calls if timing else 0}/{len(records)} calls, {untimed} NaN transfer, "
                          f"source {timing.source if timing else '-'}"
                          + (f"; {timing.mismatches[0]}" if timing and timing.mismatches else ""),
                          "all, 0 NaN, kernels", kernel_timed and untimed == 0 and bool(records)))

    checked = doc.cross_check or []
    matched = sum(bool(c["match"]) for c in checked)
    ops = sorted({row[0] for c in checked for row in c["profiler"]})
    rows.append(check_row("  profiler op names/counts == recorder", f"{matched}/{len(checked)} ranks match "
                          f"({', '.join(ops) or 'no ops seen'})", "all ranks", matched == len(checked) > 0))
    return rows


def late_rank(ctx, late_s: float, calls: int) -> dict:
    """Rank side: ``calls`` all_reduces, each after a stream synchronize; rank 1 sleeps ``late_s``
    before every odd one.  Recorded, and timed by the backend's kernels (gloo: its events)."""
    import torch
    import torch.distributed as dist

    from llmcomm_tests.core import call_site
    from llmcomm_tests.runtime.comm_profiler import CommProfiler
    from llmcomm_tests.runtime.recorder import Recorder

    cuda = ctx.backend == "nccl"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    x = torch.ones(1024, device=ctx.device)
    for _ in range(3):  # the communicator and its buffers exist before anything is timed
        dist.all_reduce(x)
    sync()
    recorder = Recorder(cuda_events=cuda).install()
    profiler = CommProfiler(ctx.backend, rank=ctx.rank)
    call_site.set_phase("decode", 1)
    with profiler.repetition():
        recorder.rep, recorder.active = 0, True
        for i in range(calls):
            sync()
            if ctx.rank == 1 and i % 2:
                time.sleep(late_s)
            dist.all_reduce(x)
        sync()
        recorder.active = False
    call_site.set_phase("none", -1)
    ops = recorder.finalize(ctx.rank)
    recorder.uninstall()
    return {"ops": ops, "kernels": profiler.kernels}


def late_rank_rows(backend: str, timeout_s: float, calls: int = 40, planted_s: float = LATE_S) -> list[tuple]:
    """Rank 1 sleeps ``planted_s`` (the probe: ``LATE_S``, what the row expects) before every other call."""
    import numpy as np

    from llmcomm_tests.runtime.launch import launch
    from llmcomm_tests.runtime.measure import split_calls

    with sharing_one_gpu():
        per_rank = launch(late_rank, (planted_s, calls), world_size=2, backend=backend,
                          timeout_s=timeout_s)
    ops, splits, timing = split_calls([r["ops"] for r in per_rank], [r["kernels"] for r in per_rank])

    def over_clean(rank: int, which: int, q: float) -> float:
        """Quantile ``q`` of the planted (odd) calls minus that of the clean ones, in issue order."""
        order = np.argsort(ops[rank].start_ns, kind="stable")
        values = np.asarray(splits[rank][which])[order]
        return float(np.nanquantile(values[1::2], q) - np.nanquantile(values[0::2], q))

    # The lateness must sit in the early rank's wait on most planted calls (median), and in its
    # transfer on hardly any (lower quartile: a busy host adds transfer time to a few calls at random).
    early_wait, early_transfer = over_clean(0, 0, 0.5), over_clean(0, 1, 0.25)
    late_own_wait = float(np.nanmedian(np.asarray(splits[1][0])[np.argsort(ops[1].start_ns, kind="stable")][1::2]))
    ok = (early_wait >= 0.8 * LATE_S and abs(early_transfer) <= 0.5 * LATE_S and late_own_wait <= 0.5 * LATE_S
          and timing.source == "kernels")
    return [check_row(f"rank 1 late {LATE_S * 1e3:g} ms before all_reduce, {placement(2, backend)}",
                      f"rank 0 over clean: wait p50 {early_wait * 1e3:+.2f} ms, transfer p25 {early_transfer * 1e3:+.2f}"
                      f" ms; rank 1 wait p50 {late_own_wait * 1e3:.2f} ms ({timing.source}, {calls} calls)",
                      f"wait >= +{0.8 * LATE_S * 1e3:g} ms, |transfer| <= {0.5 * LATE_S * 1e3:g} ms", ok)]


def weight_rows() -> list[tuple]:
    """Seconds per drawn random number on one thread (a rank's draw), times the 8-GPU suite's draws."""
    import torch

    from llmcomm_tests.engine.config import PRESETS
    from llmcomm_tests.engine.layout import Layout
    from llmcomm_tests.engine.weights import drawn_elements, rank_shard
    from llmcomm_tests.spec import load_specs

    shape = PRESETS["llama-3.1-8b"]
    drawn = replace(shape, n_layers=1)  # rank 0 of tp=8: the globals it holds and one layer
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a rank draws
    try:
        t0 = time.process_time()
        rank_shard(drawn, Layout(8, 1), 0, 0)
        seconds = time.process_time() - t0
    finally:
        torch.set_num_threads(threads)
    numbers = drawn_elements(drawn, Layout(8, 1), 0)
    per_number = seconds / numbers
    one_rank = drawn_elements(shape, Layout(8, 1), 0) * per_number
    cases = [c for s in load_specs([REPO / "slo_specs" / name for name in SUITE_SPECS]) for c in s.cases()]
    per_case = [max(drawn_elements(c.engine, c.layout, r) for r in range(c.world_size)) * per_number for c in cases]
    total = sum(per_case)
    return [check_row("weights: llama-3.1-8b tp=8 rank 0 shard, 1 thread",
                      f"{seconds:.2f} s CPU for globals + 1 layer ({numbers / 1e6:.0f} M numbers, "
                      f"{per_number * 1e9:.2f} ns each) -> {one_rank:.1f} s for {shape.n_layers} layers", "-", None),
            check_row(f"  predicted 8-GPU suite weight generation ({len(cases)} cases of {len(SUITE_SPECS)} specs)",
                      f"{total / 60:.1f} min (slowest rank per case, max {max(per_case):.0f} s)",
                      f"< {LEASE_S // 60} min (one lease)", total < LEASE_S)]
