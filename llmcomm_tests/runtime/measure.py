"""One case, end to end on the ranks: build the engine shard, record, warm up, time repetitions.

``run_engine`` is the arrow case → launch → engine + recorder → run document; it knows nothing of
specs, checks or reports.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from types import SimpleNamespace

import numpy as np

from llmcomm_tests.core.documents import CommTiming, RunDocument, from_json
from llmcomm_tests.core.envinfo import Environment
from llmcomm_tests.engine.parallel import ParallelEngine
from llmcomm_tests.runtime import arrival, kernel_timing, launch, metrics, node_launch
from llmcomm_tests.runtime.comm_profiler import CommProfiler, wanted
from llmcomm_tests.runtime.faults import OVER_RECORDER, install_faults
from llmcomm_tests.runtime.recorder import Recorder
from llmcomm_tests.runtime.run_config import RunConfig


def run_engine(cfg: RunConfig, *, backend: str = "auto", timeout_s: float = 300.0,
             available_ranks: int | None = None, threads_per_rank: int = 1, nodes=None) -> RunDocument:
    """Launch ``cfg`` and return its run document.  ``nodes`` (a ``cluster.node_launch.NodeLaunch``)
    starts the ranks with torchrun on each node instead of forking them here."""
    cfg.layout.validate(cfg.engine, available_ranks)
    backend = launch.resolve_backend(backend, cfg.layout.world_size)
    if nodes is not None:
        return _run_on_nodes(cfg, backend, timeout_s, nodes)
    per_rank = launch.launch(rank_run, (cfg,), world_size=cfg.layout.world_size, backend=backend,
                             timeout_s=timeout_s, threads_per_rank=threads_per_rank)
    return assemble(cfg, backend, per_rank)


def _run_on_nodes(cfg: RunConfig, backend: str, timeout_s: float, nodes) -> RunDocument:
    """Rank r on node r // ranks_per_node, on as many nodes as the layout needs; the ranks run
    ``llmcomm_tests.runtime.torchrun_entry`` (this module's rank_run, then assemble on rank 0) and the document comes
    back through the node launcher's shared folder."""
    world, per_node = cfg.layout.world_size, nodes.ranks_per_node
    placed = node_launch.subset(replace(nodes, timeout_s=timeout_s), -(-world // per_node), min(per_node, world))
    run = node_launch.run_on_nodes(placed, "llmcomm_tests.runtime.torchrun_entry:main",
                                   cfg.to_arguments(backend, timeout_s) + ["--json", "{results}/run.json"])
    return from_json(RunDocument, run.document())


def assemble(cfg: RunConfig, backend: str, per_rank: list[dict],
             offsets: dict[int, tuple[int, int]] | None = None) -> RunDocument:
    """The run document of the ranks' results; ``offsets`` (``clocks.estimate_offsets``) put ranks
    on other hosts onto rank 0's clock (one host: None, the clock is shared)."""
    driver = per_rank[0]
    rank_ops = [r["ops"] for r in per_rank]
    timed_ops, splits, timing = split_calls(rank_ops, [r.get("comm_kernels") for r in per_rank], offsets)
    generations = driver["generations"]
    # Our ranks also time repetitions with the recorder off; a framework's run is recorded throughout.
    recorded = driver.get("recorded_generations", generations)
    sampler = next((r for r in per_rank if r.get("logits") is not None), None)
    return RunDocument(
        case=cfg.case_info(backend), env=driver["env"], tokens=generations[0]["tokens"],
        metrics=metrics.latency_metrics(generations, cfg.gen_len, cfg.batch),
        recorded_metrics=metrics.latency_metrics(recorded, cfg.gen_len, cfg.batch),
        comm=metrics.comm_metrics(timed_ops, recorded, cfg.batch, cfg.gen_len, splits),
        volume=metrics.volume(rank_ops, rep=0), volume_stable=metrics.volume_stable(rank_ops, cfg.repeats),
        ops=metrics.op_summaries(rank_ops, splits, cfg.seed), timeline=metrics.timeline(rank_ops, splits),
        records=metrics.records(rank_ops, splits=splits) if cfg.keep_records else None,
        logits=sampler["logits"].tolist() if sampler is not None else None,
        cross_check=[r["cross_check"] for r in per_rank] if cfg.cross_check else None,
        faults_fired=[r.get("faults_fired", {}) for r in per_rank],  # inject.never_fired reads it
        no_completion=[r.get("no_completion", {}) for r in per_rank], comm_timing=timing)


def split_calls(rank_ops, kernels, offsets=None):
    """The calls on the clock their split is taken on, the split (``arrival.split``) and where it
    came from: the kernels where every rank brought them (one host: their clock is shared), else
    the host clock (moved by ``offsets`` across hosts); calls timed by CUDA events alone are not
    split, and the reason travels with the document."""
    have_kernels = all(k is not None for k in kernels) and bool(kernels)
    if have_kernels and not offsets:
        found = kernel_timing.split(rank_ops, kernels)
        untimed = sum(len(o) for o in rank_ops) - found.timed_calls
        unsplit = (f"{untimed} calls have no kernel: "
                   + ("kernel counts differ from the recorder's" if found.mismatches else "no kernel seen")
                   if untimed else None)
        return found.ops, found.splits, CommTiming("kernels", found.timed_calls, unsplit, found.mismatches)
    splits = arrival.split(rank_ops, {r: o for r, (o, _) in (offsets or {}).items()},
                           max((e for _, e in (offsets or {}).values()), default=0))
    mismatches = [m for ops, k in zip(rank_ops, kernels) if k is not None for m in kernel_timing.align(ops, k)[1]]
    if any(o.device_timed for o in rank_ops):
        why = ("ranks on several hosts: kernel clocks are per host, not aligned" if have_kernels else
               "durations from CUDA events are on no clock the ranks share, and no kernel timing ran "
               "(--comm-timing profiler)")
        return rank_ops, splits, CommTiming("cuda events", 0, why, mismatches)
    timed = sum(int((~np.isnan(o.duration_s)).sum()) for o in rank_ops)
    return rank_ops, splits, CommTiming("host clock", timed, None, mismatches)


def rank_run(ctx, cfg: RunConfig) -> dict:
    """Rank side: everything between process-group init and teardown."""
    import torch
    import torch.distributed as dist

    engine = ParallelEngine(cfg.engine, cfg.layout, ctx.rank, dtype=cfg.dtype, seed=cfg.seed, device=ctx.device,
                            max_len=cfg.prompt_len + cfg.gen_len)
    prompt = torch.randint(0, cfg.engine.vocab, (cfg.batch, cfg.prompt_len),
                           generator=torch.Generator().manual_seed(cfg.seed + 1))
    recorder = Recorder(cuda_events=ctx.backend == "nccl")
    profiler = CommProfiler(ctx.backend, rank=ctx.rank) if wanted(cfg.comm_timing, ctx.backend) else None

    # Planted faults act in the timed repetitions, recorded or not (never in warm-up).  Extra ops
    # sit under the recorder (it times them); a larger message and a slowdown's lookup over it (it
    # sees the larger tensor; the lookup is not the fault's time), and its wait plants the slowdown.
    armed = SimpleNamespace(active=False)
    cuda = ctx.backend == "nccl"
    faults = [install_faults([f for f in cfg.inject if f.kind not in OVER_RECORDER], armed, cuda)]
    recorder.install()
    faults.append(install_faults([f for f in cfg.inject if f.kind in OVER_RECORDER], armed, cuda, held_by=recorder))
    distributed = ctx.world_size > 1

    def repetition(rep: int, recorded: bool, keep_logits: bool = False):
        if distributed:
            dist.barrier()  # start every repetition together; not recorded
            if ctx.backend == "nccl":
                torch.cuda.synchronize()  # the barrier does not block the host on NCCL
        with profiler.repetition() if recorded and profiler else contextlib.nullcontext():
            recorder.rep, recorder.active, armed.active = rep, recorded, True
            gen = engine.generate(prompt, cfg.gen_len, keep_logits=keep_logits)
            recorder.active = armed.active = False
        return gen

    for _ in range(cfg.warmup):
        engine.generate(prompt, cfg.gen_len)
    # Timed repetitions with the recorder off give TTFT/TPOT/E2E; recorded ones the per-op
    # figures (and the same metrics again, to show what recording costs).
    runs = {"clean": [], "recorded": []}
    logits = None
    for rep in range(cfg.repeats):
        for kind in ("recorded", "clean"):
            gen = repetition(rep, kind == "recorded", keep_logits=cfg.keep_logits and rep == 0 and kind == "clean")
            if gen is not None:
                runs[kind].append({"tokens": gen.tokens, "token_times_s": gen.token_times_s})
                if gen.logits is not None:
                    logits = gen.logits.numpy()
    result = {"rank": ctx.rank, "ops": recorder.finalize(ctx.rank), "generations": runs["clean"],
              "recorded_generations": runs["recorded"], "logits": logits,
              "env": Environment.capture(ctx).rank_document() if ctx.rank == 0 else None,
              "faults_fired": {k: sum(i.fired.get(k, 0) for i in faults) for k in map(str, cfg.inject)},
              "no_completion": recorder.no_completion(),
              "comm_kernels": profiler.kernels if profiler else None}
    if cfg.cross_check:
        from llmcomm_tests.runtime.crosscheck import profile_ops

        result["cross_check"] = profile_ops(engine, prompt, cfg.gen_len, recorder, ctx.rank)
    faults[1].uninstall()  # in the reverse order of installation: each puts back what it found
    recorder.uninstall()
    faults[0].uninstall()
    return result


def run_summary(doc) -> str:
    c, m, comm = doc.case, doc.metrics, doc.comm
    lines = [
        f"layout tp={c.tp} pp={c.pp} ({c.world_size} ranks, {c.backend})  engine={c.engine['name']}  "
        f"batch={c.batch} prompt={c.prompt_len} gen={c.gen_len} {c.dtype}",
        f"  TTFT {m.ttft.p50 * 1e3:.2f} ms   TPOT {m.tpot.p50 * 1e3:.2f} ms   E2E {m.e2e.p50 * 1e3:.2f} ms   "
        f"{m.tokens_per_s:.1f} tok/s   (p50 of {m.repeats} repetitions, recorder off)",
        f"  comm {comm.time_per_token.p50 * 1e3:.2f} ms/token   share of TTFT {comm.share_ttft.p50:.0%}  "
        f"of TPOT {(comm.share_tpot.p50 or 0):.0%}   {comm.bytes_per_token / 1024:.1f} KiB on the wire per token",
    ]
    if doc.recorded_metrics is not None and doc.recorded_metrics.repeats:
        r = doc.recorded_metrics
        lines.append(f"  recorded repetitions: TTFT {r.ttft.p50 * 1e3:.2f} ms   TPOT {r.tpot.p50 * 1e3:.2f} ms   "
                     f"(interleaved with the clean ones; the per-op figures come from these)")
    if comm.wait_per_token.n:
        lines.append(f"  waiting for late peers {comm.wait_per_token.p50 * 1e3:.2f} ms/token (slowest rank)")
    for row in doc.volume:
        lines.append(f"    {row.op:>10} {row.phase:>7} {row.site:>16}  x{row.count:<5} "
                     f"{row.bytes:>12} B  wire {row.wire_bytes:>12} B")
    return "\n".join(lines)
