"""``llmcomm cluster up|down|status|rate``: an emulated cluster of network namespaces on this host.

    llmcomm cluster up --nodes 2 --ranks-per-node 2 --inter-rate 200mbit   # prints the cluster id
    llmcomm cluster rate --id ID --inter-rate 1gbit
    llmcomm cluster status
    llmcomm cluster down --id ID      (or --all: every registered cluster and stray llmc-* namespace)
    llmcomm cluster calibrate --id ID --name NAME [--engine SHAPE]   # a two-tier profile of it

``calibrate`` fits the intra tier (ranks inside one namespace) and the inter tier (ranks across the
shaped link) from bench-comm sweeps through the node launcher, and the compute peaks from one rank
running the engine shape alone; it writes ``.llmcomm/profiles/NAME.yaml``, which a spec's
``hardware: NAME`` (or ``--llmcomm-hardware NAME``) then finds.

What ``up`` builds and how teardown works: llmcomm_tests/runtime/netns.py.  A cluster made here
lives until ``down``; the test plugin's clusters belong to the session and go with it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from llmcomm_tests.analytic.hardware import USER_PROFILE_DIR
from llmcomm_tests.calibration import two_tier as calibrate_tiers
from llmcomm_tests.engine.config import resolve_engine
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.runtime import netns
from llmcomm_tests.runtime.measure import run_engine
from llmcomm_tests.runtime.run_config import RunConfig


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["up", "down", "status", "rate", "calibrate"])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--ranks-per-node", type=int, default=2)
    parser.add_argument("--inter-rate", default="200mbit", help="tc rate of every node's egress, or 'none'")
    parser.add_argument("--id", default=None, help="cluster id (down, rate)")
    parser.add_argument("--all", action="store_true", help="down: every registered cluster and stray namespace")
    parser.add_argument("--json", action="store_true", help="print the cluster as JSON")
    parser.add_argument("--name", default=None, help="calibrate: the profile's name (what specs' hardware: matches)")
    parser.add_argument("--engine", default="tiny", help="calibrate: the shape whose compute a 1-rank run measures")
    parser.add_argument("--out", default=None, help="calibrate: profile YAML (default .llmcomm/profiles/NAME.yaml)")
    parser.add_argument("--repeats", type=int, default=6, help="calibrate: timed calls per op and size")


def main(args) -> int:
    rate = None if str(args.inter_rate).lower() == "none" else args.inter_rate
    try:
        if args.action == "up":
            ok, why = netns.can_create_namespaces()
            if not ok:
                print(f"llmcomm cluster: {why}", file=sys.stderr)
                return 2
            cluster = netns.up(args.nodes, args.ranks_per_node, rate)
            print(json.dumps(cluster.to_dict()) if args.json else _describe(cluster))
        elif args.action == "down":
            if args.all:
                removed = netns.down_all()
            elif args.id:
                removed = netns.down(args.id)
            else:
                print("llmcomm cluster down: give --id ID or --all", file=sys.stderr)
                return 2
            print(f"removed {len(removed)} namespace(s): {' '.join(removed) or '-'}")
        elif args.action == "rate":
            if not args.id or rate is None:
                print("llmcomm cluster rate: give --id ID and --inter-rate RATE", file=sys.stderr)
                return 2
            print(_describe(netns.set_rate(netns.load_cluster(args.id), rate)))
        elif args.action == "calibrate":
            return _calibrate(args)
        else:
            clusters = netns.registered()
            if args.json:
                print(json.dumps([c.to_dict() for c in clusters]))
            for cluster in clusters:
                print(_describe(cluster))
            if not clusters:
                print("no emulated cluster")
    except (netns.ClusterError, ValueError) as exc:
        print(f"llmcomm cluster: {exc}", file=sys.stderr)
        return 2
    return 0


def _calibrate(args) -> int:

    if not args.id or not args.name:
        print("llmcomm cluster calibrate: give --id ID (llmcomm cluster status) and --name NAME", file=sys.stderr)
        return 2
    cluster, shape = netns.load_cluster(args.id), resolve_engine(args.engine)
    one_rank = run_engine(RunConfig(shape, Layout(1, 1), batch=16, prompt_len=16, gen_len=8, repeats=5, warmup=1))
    profile, rows = calibrate_tiers.calibrate_cluster(cluster, args.name, calibrate_tiers.compute_from_run(one_rank, shape),
                                                args.repeats)
    out = Path(args.out) if args.out else USER_PROFILE_DIR / f"{args.name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    profile.dump(out)
    print(f"wrote {out}: intra from {len(rows['intra'])} sweep rows, inter from {len(rows['inter'])}; "
          f"{cluster.ranks_per_node} ranks per node; use it with hardware: {args.name}")
    return 0


def _describe(cluster) -> str:
    nodes = ", ".join(f"{n.name} {n.addr}" for n in cluster.nodes)
    return (f"cluster {cluster.id}: {len(cluster.nodes)} nodes x {cluster.ranks_per_node} ranks, inter-node egress "
            f"{cluster.inter_rate or 'unshaped'} (tbf), interface {cluster.ifname}; nodes: {nodes}; "
            f"launch template: ip netns exec {{node}}")
