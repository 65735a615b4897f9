"""The A/B gate's reference regression: a real link slowdown, the emulated nodes' shaped rate lowered
for arm B.  Needs root with CAP_NET_ADMIN (network namespaces, veth, tbf).

    python benchmarks/link_slowdown_ab.py [--trials 5] [--rate 200mbit] [--slower 10,20] [--aa 2]
        [--engine cpu-link] [--batch 16] [--repeats 3] [--max-pairs 40]

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
the decode all-reduce transfer, and the TPOT change.
"""

from __future__ import annotations

import argparse
import sys
import time

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


def mid(values: list) -> float:
    return sorted(values)[len(values) // 2] if values else float("nan")


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
    args = parser.parse_args()
    cfg = RunConfig(resolve_engine(args.engine), LAYOUT, batch=args.batch, prompt_len=4, gen_len=8,
                    repeats=args.repeats, warmup=1)
    conditions = [("A/A", args.rate, args.aa)] + [(f"link -{p}%", lowered(args.rate, float(p)), args.trials)
                                                 for p in args.slower.split(",") if p]
    conditions = [c for c in conditions if c[2] > 0]  # --aa 0: no A/A
    cluster = netns.up_owned(2, 1, args.rate)
    t0 = time.perf_counter()
    lines = []
    try:
        for name, rate_b, trials in conditions:
            expected = wire_seconds_added(cfg, args.rate, rate_b)
            hits, case_failed, pairs, walls, op_changes, tpot_changes = 0, 0, [], [], [], []
            for trial in range(trials):
                arm_a, arm_b = ShapedLinkArm("A", cluster, args.rate), ShapedLinkArm("B", cluster, rate_b)
                res = gate.compare_arms(cfg, cfg, arm_a, arm_b, threshold=args.threshold, max_pairs=args.max_pairs,
                                        seed=trial)
                failed = [r for r in res.failed if r.name != "ab environment"]
                hit = any(r.name.startswith("ab op all_reduce ") for r in failed) if name != "A/A" else bool(failed)
                hits, case_failed = hits + hit, case_failed + bool(failed)
                pairs.append(res.pairs)
                walls.append(res.wall_s)
                op, tpot = change_of(res, "op all_reduce decode"), change_of(res, "tpot")
                op_changes += [op.change] if op else []
                tpot_changes += [tpot.change] if tpot else []
                print(f"{name:10s} trial {trial + 1}: {'ALARM' if hit and name == 'A/A' else 'caught' if hit else '-':6s} "
                      f"pairs {res.pairs:3d} {res.wall_s:5.0f} s  stop: {res.stopped}; "
                      f"{op.metric + ' ' + op.describe() if op else ''}", flush=True)
                if res.error:
                    print(f"    error: {res.error.splitlines()[0]}")
            label = "false alarms" if name == "A/A" else "detected"
            lines.append(f"{name:10s} {rate_b:>11s} {hits}/{trials} {label:12s} {case_failed:>3d}/{trials:<3d} "
                         f"{mid(pairs):5.0f} {max(pairs):4d} {mid(walls):7.0f} {max(walls):6.0f} "
                         f"{mid(op_changes):+14.1%} {mid(tpot_changes):+9.1%}  +{expected * 1e6:.0f} us/call")
    finally:
        netns.release(cluster)
    print(f"\n{args.engine} TP2 over 2 emulated nodes (1 rank each), batch {args.batch}, repeats {args.repeats}, "
          f"arm A at {args.rate}, threshold {args.threshold:.0%}, max pairs {args.max_pairs}, "
          f"{time.perf_counter() - t0:.0f} s in all")
    print(f"{'condition':10s} {'arm B rate':>11s} {'rate':>18s} {'case failed':>7s} {'pairs':>5s} {'max':>4s} "
          f"{'wall p50':>7s} {'max s':>6s} {'all_reduce dec':>14s} {'TPOT':>9s}  link model (payload)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
