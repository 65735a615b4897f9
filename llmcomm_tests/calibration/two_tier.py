"""Two-tier profile from measurement on a (emulated or real) multi-node cluster.

* intra tier: bench-comm's sweep (calibration/sweep.py, same ops, sizes, timing) with every rank
  on one node — ops within a namespace;
* inter tier: the same sweep with ranks on different nodes — one rank per node (send_recv and the
  2-rank collectives cross the link) and ``ranks_per_node`` per node (the 4-rank collectives, whose
  ring crosses it twice);
* each set is fitted by analytic/commands_calibrate.fit_profile (robust α-β per op and group size)
  and lands in its tier; the inter tier's peak starts at the shaped link rate (the physical floor:
  nothing crosses faster), raised with a note only if a fit beats it;
* compute: one rank alone runs the engine shape (``compute_from_run``), so the compute peaks are
  measured on this host, not guessed — from a 1-rank run, not from the layouts the profile is
  then held against.

Every sweep is launched through runtime/node_launch.py (torchrun per node), so the same code
calibrates a Slurm or Kubernetes cluster given its template.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path

from llmcomm_tests.analytic.hardware import Compute, HardwareProfile, load_profile
from llmcomm_tests.calibration.fit import fit_profile
from llmcomm_tests.calibration.sweep import rank_sweep, rows_from
from llmcomm_tests.core.units import rate_bytes_per_s
from llmcomm_tests.engine.config import DTYPE_BYTES, EngineShape
from llmcomm_tests.runtime import node_launch
from llmcomm_tests.runtime.launch import init_rank, teardown_rank

SIZES = [1024 * 4 ** k for k in range(7)]  # 1 KiB … 4 MiB
OPS = ("all_reduce", "all_gather", "broadcast", "gather", "send_recv")  # what the engine issues


def rank_sweep_main(argv: list[str]) -> int:
    """Rank side (under torchrun): bench-comm's per-rank sweep; rank 0 writes the rows."""
    import torch
    import torch.distributed as dist


    parser = argparse.ArgumentParser()
    parser.add_argument("--ops", required=True)
    parser.add_argument("--sizes", required=True)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    ctx = init_rank(rank, world, int(os.environ.get("LOCAL_RANK", 0)), "gloo", None, 600.0)
    try:
        mine = rank_sweep(ctx, args.ops.split(","), [int(s) for s in args.sizes.split(",")], args.repeats,
                           args.warmup, "fp32")
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(mine, gathered, dst=0)
        if rank == 0:
            Path(args.out).write_text(json.dumps(rows_from(gathered, world, args.repeats)))
    finally:
        teardown_rank()
    return 0


def sweep(launch: node_launch.NodeLaunch, ops, sizes, repeats: int = 10) -> list[dict]:
    ops = [o for o in ops if o != "send_recv" or launch.world_size >= 2]
    run = node_launch.run_on_nodes(launch, "llmcomm_tests.calibration.two_tier:rank_sweep_main",
                                   ["--ops", ",".join(ops), "--sizes", ",".join(map(str, sizes)),
                                    "--repeats", str(repeats), "--out", "{results}/rows.json"])
    return run.document("rows.json")


def tier_sweeps(launch: node_launch.NodeLaunch, sizes=SIZES, repeats: int = 10, ops=OPS) -> dict:
    """``{"intra": rows, "inter": rows}``: 2 ranks on node 0; then 2 nodes × 1 rank and, when nodes
    hold more than one rank, 2 nodes × ranks_per_node."""
    if len(launch.nodes) < 2:
        raise ValueError("a two-tier calibration needs at least two nodes")
    intra = sweep(node_launch.subset(launch, 1, min(2, launch.ranks_per_node)), ops, sizes, repeats) \
        if launch.ranks_per_node >= 2 else []
    inter = sweep(node_launch.subset(launch, 2, 1), ops, sizes, repeats)
    if launch.ranks_per_node >= 2:
        inter += sweep(node_launch.subset(launch, 2, launch.ranks_per_node), [o for o in ops if o != "send_recv"], sizes,
                       repeats)
    return {"intra": intra, "inter": inter}


def compute_from_run(doc, shape: EngineShape) -> Compute:
    """Compute peaks that reproduce a 1-rank run's prefill and decode times (efficiency 1: the
    measured rates *are* the achieved ones): hbm = weight bytes / decode forward, flops =
    2·params·tokens / prefill forward."""
    case, m = doc.case, doc.metrics
    if case.world_size != 1:
        raise ValueError("compute is calibrated from a 1-rank run")
    params, elem = shape.n_params(), DTYPE_BYTES[case.dtype]
    tokens = case.batch * case.prompt_len
    # minimum over repetitions: what the rank costs undisturbed by other processes (study.best)
    return Compute(device=f"this host, 1 rank ({doc.env.get('cpu_count')} CPUs), measured",
                   peak_flops=2.0 * params * tokens / min(m.ttft.samples),
                   hbm_Bps=params * elem / min(m.tpot.samples),
                   prefill_efficiency=1.0, decode_efficiency=1.0)


def two_tier_profile(rows: dict, name: str, ranks_per_node: int, inter_rate_Bps: float | None, link: str,
                     compute: Compute | None = None, base: "HardwareProfile | str" = "cpu-loopback",
                     source: str = "") -> HardwareProfile:
    """Fit both tiers; the inter fits go into a copy of the base whose ``intra`` slot carries the
    inter tier's floor (peak = link rate), then move to ``inter``."""
    base = load_profile(base) if isinstance(base, str) else base
    intra = fit_profile(rows["intra"], name, base, source).tier("intra") if rows["intra"] else base.tier("intra")
    seed = base.tier("inter")
    if inter_rate_Bps:
        seed = replace(seed, peak_Bps=inter_rate_Bps, link=link)
    inter_profile = fit_profile(rows["inter"], name, base.with_tier("intra", replace(seed, ops={})), source)
    inter = replace(inter_profile.tier("intra"), link=link)
    notes = [f"intra: {len(rows['intra'])} sweep rows, ranks on one node; inter: {len(rows['inter'])} rows, ranks "
             f"on two nodes"] + [f"inter {n}" for n in inter_profile.notes[1:]]
    profile = replace(base, name=name, ranks_per_node=ranks_per_node, tiers={"intra": intra, "inter": inter},
                      compute=compute or base.compute, source=source or "cluster.calibrate",
                      description=f"Two tiers measured on an emulated cluster ({link}).", notes=notes)
    profile.validate()
    return profile


def calibrate_cluster(cluster, name: str, compute: Compute | None = None, repeats: int = 6):
    """(profile, sweep rows) of an emulated cluster (netns.Cluster): both tiers' sweeps through the
    node launcher, the inter tier's floor at the shaped rate."""
    rows = tier_sweeps(node_launch.emulated_nodes(cluster, 600), repeats=repeats)
    link = f"veth + tbf {cluster.inter_rate or 'unshaped'} per node egress"
    rate = rate_bytes_per_s(cluster.inter_rate) if cluster.inter_rate else None
    profile = two_tier_profile(rows, name, cluster.ranks_per_node, rate, link, compute=compute,
                               source="cluster.calibrate: tier sweeps through the node launcher + a 1-rank run")
    return profile, rows
