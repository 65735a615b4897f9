"""The A/B gate's reference regression: a real link slowdown, the emulated nodes' shaped rate lowered
for arm B.  Needs root with CAP_NET_ADMIN (network namespaces, veth, tbf).

    python benchmarks/link_slowdown_ab.py [--trials 5] [--rate 200mbit] [--slower 10,20] [--aa 2]
        [--engine cpu-link] [--batch 16] [--repeats 3] [--max-pairs 40] [--results bench-out/link-slowdown.jsonl]
    python benchmarks/link_slowdown_ab.py --summary

Two emulated nodes, one rank each (``runtime/netns.py``: a namespace per node, veth to a bridge, tbf
on each node's egress), run the engine under TP 2, so every all-reduce crosses the shaped link.  Arm A
runs at ``--rate``; arm B at the rate lowered by each ``--slower`` percent (``--aa`` trials of A/A:
both at ``--rate``).  The arms are this interpreter taking turns on one cluster; before each of its
runs an arm sets the rate (``tc qdisc replace``), and nothing else differs.  The comparison is the
gate's own loop (``judging/ab/gate.compare_arms``: AB/BA order, group-sequential looks, the same
rows and stopping rules as ``--llmcomm-ab``), so each line is what the gate would conclude of a link
that slowed by that much.

A decode all-reduce must be larger than the tbf bucket (``netns.burst_bytes``: 1 ms of the rate, at
least 16 KiB) or a full bucket lets it through at memory speed whatever the rate: batch 16 of
cpu-link's hidden 1024 in fp32 is 64 KiB against 25 KB at 200mbit.  What the slower link should
cost, from the link alone: each rank of a 2-rank ring all-reduce sends the tensor's S bytes once
(2·(n−1)/n·S), so the call gains (S − b_B)/r_B − (S − b_A)/r_A of wire time (b: the bucket; payload
only, TCP/IP headers add ~3 %; a bucket not yet refilled adds more).  It is printed beside the change the gate measured on
the decode all-reduce transfer.  One JSON line per comparison goes to ``--results`` (batches add up)
and the table is ``ab_selftest.summary``'s, with exact 95 % intervals.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from llmcomm_tests.analytic.volume import op_instances
from llmcomm_tests.core.envinfo import Environment
from llmcomm_tests.engine.config import resolve_engine
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.judging.ab import gate
from llmcomm_tests.judging.ab.arms import ArmEnv, ArmError
from llmcomm_tests.judging.ab.observe import observe
from llmcomm_tests.judging.ab.paired import DEFAULT_THRESHOLD
from llmcomm_tests.core.units import rate_bytes_per_s
from llmcomm_tests.runtime import netns, node_launch
from llmcomm_tests.runtime.measure import run_engine
from llmcomm_tests.runtime.run_config import RunConfig
from ab_selftest import summary

LAYOUT = Layout(2, 1)


class ShapedLinkArm:
    """An arm of ``gate.compare_arms`` that runs on the emulated cluster at its own link rate."""

    def __init__(self, name: str, cluster: netns.Cluster, rate: str):
        self.name, self.cluster, self.rate = name, cluster, rate
        env = Environment.capture()
        self.env = ArmEnv(sys.executable, env, rank_executable=env.executable)  # ranks: this interpreter
        self.nodes = node_launch.emulated_nodes(cluster)

    def run(self, cfg, backend: str, timeout_s: float, available_ranks: int | None):
        if self.cluster.inter_rate != self.rate:
            netns.set_rate(self.cluster, self.rate)
        try:
            return observe(run_engine(cfg, backend=backend, timeout_s=timeout_s, nodes=self.nodes))
        except Exception as exc:  # the gate drops the pair and runs another of the same order
            raise ArmError(f"arm {self.name} at {self.rate}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc


def lowered(rate: str, percent: float) -> str:
    return f"{rate_bytes_per_s(rate) * 8 * (1 - percent / 100) / 1e3:.0f}kbit"


def wire_seconds_added(cfg: RunConfig, rate_a: str, rate_b: str) -> float:
    """Per decode all-reduce: what its bytes (sent once by each rank of a 2-rank ring) spend at the
    slower rate over the faster, past a full bucket (``netns.burst_bytes``) that leaves at memory speed."""
    size = max(r["bytes"] for r in op_instances(cfg.engine, cfg.layout, cfg.batch, cfg.prompt_len, cfg.gen_len,
                                                 cfg.dtype) if r["op"] == "all_reduce" and r["phase"] == "decode")

    def wire(rate: str) -> float:
        return max(0, size - netns.burst_bytes(rate)) / rate_bytes_per_s(rate)

    return wire(rate_b) - wire(rate_a)


def change_of(result, prefix: str):
    rows = [c for c in result.changes if c.metric.startswith(prefix)]
    return rows[0] if rows else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5, help="comparisons per lowered rate")
    parser.add_argument("--aa", type=int, default=2, help="A/A comparisons (both arms at --rate)")
    parser.add_argument("--rate", default="200mbit")
    parser.add_argument("--slower", default="10,20", help="percent the rate is lowered by for arm B")
    parser.add_argument("--engine", default="cpu-link")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-pairs", type=int, default=gate.DEFAULT_MAX_PAIRS)
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    parser.add_argument("--results", default="bench-out/link-slowdown.jsonl")
    parser.add_argument("--summary", action="store_true", help="only print the table of --results")
    args = parser.parse_args()
    results = Path(args.results)
    if not args.summary:
        results.parent.mkdir(parents=True, exist_ok=True)
        run_trials(args, results)
    print(summary([json.loads(line) for line in results.read_text().splitlines() if line.strip()]))


def run_trials(args, results: Path) -> None:
    cfg = RunConfig(resolve_engine(args.engine), LAYOUT, batch=args.batch, prompt_len=4, gen_len=8,
                    repeats=args.repeats, warmup=1)
    conditions = [("A/A", args.rate, args.aa)] + [(f"link -{p}%", lowered(args.rate, float(p)), args.trials)
                                                 for p in args.slower.split(",") if p]
    cluster = netns.up_owned(2, 1, args.rate)
    try:
        for name, rate_b, trials in conditions:
            model = f"link model: decode +{wire_seconds_added(cfg, args.rate, rate_b) * 1e6:.0f} us/call (payload)"
            for trial in range(trials):
                arm_a, arm_b = ShapedLinkArm("A", cluster, args.rate), ShapedLinkArm("B", cluster, rate_b)
                res = gate.compare_arms(cfg, cfg, arm_a, arm_b, threshold=args.threshold, max_pairs=args.max_pairs,
                                        seed=trial)
                failed = [r for r in res.failed if r.name != "ab environment"]
                hit = any(r.name.startswith("ab op all_reduce ") for r in failed) if name != "A/A" else bool(failed)
                op, tpot = change_of(res, "op all_reduce decode"), change_of(res, "tpot")
                record = {"when": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "trial": trial,
                          "mode": name if name == "A/A" else f"{name} (B {rate_b})", "hit": hit, "case_failed": bool(failed), "pairs": res.pairs,
                          "wall_s": round(res.wall_s, 1), "stopped": res.stopped, "metric": op.metric if op else None,
                          "change": op.change if op else None, "tpot_change": tpot.change if tpot else None,
                          "planted": "-" if name == "A/A" else model, "engine": f"{args.engine} b{args.batch}",
                          "layout": f"{LAYOUT} over 2 nodes at {args.rate}", "repeats": args.repeats,
                          "threshold": args.threshold, "max_pairs": args.max_pairs, "error": res.error}
                with results.open("a") as out:
                    out.write(json.dumps(record) + "\n")
                print(f"{name:10s} trial {trial + 1}: {'ALARM' if hit and name == 'A/A' else 'caught' if hit else '-':6s} "
                      f"pairs {res.pairs:3d} {res.wall_s:5.0f} s  stop: {res.stopped}; "
                      f"{op.metric + ' ' + op.describe() if op else ''}", flush=True)
                if res.error:
                    print(f"    error: {res.error.splitlines()[0]}")
    finally:
        netns.release(cluster)


if __name__ == "__main__":
    main()
