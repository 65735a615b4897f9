"""``llmcomm cluster up|down|status|rate``: an emulated cluster of network namespaces on this host.

    llmcomm cluster up --nodes 2 --ranks-per-node 2 --inter-rate 200mbit   # prints the cluster id
    llmcomm cluster rate --id ID --inter-rate 1gbit
    llmcomm cluster status
    llmcomm cluster down --id ID      (or --all: every registered cluster and stray llmc-* namespace)

What ``up`` builds and how teardown works: llmcomm_tests/cluster/netns.py.  A cluster made here
lives until ``down``; the test plugin's clusters belong to the session and go with it.
"""

from __future__ import annotations

import json
import sys


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["up", "down", "status", "rate"])
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument("--ranks-per-node", type=int, default=2)
    parser.add_argument("--inter-rate", default="200mbit", help="tc rate of every node's egress, or 'none'")
    parser.add_argument("--id", default=None, help="cluster id (down, rate)")
    parser.add_argument("--all", action="store_true", help="down: every registered cluster and stray namespace")
    parser.add_argument("--json", action="store_true", help="print the cluster as JSON")


def main(args) -> int:
    from ..cluster import netns

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
            print(_describe(netns.set_rate(netns.load(args.id), rate)))
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


def _describe(cluster) -> str:
    nodes = ", ".join(f"{n.name} {n.addr}" for n in cluster.nodes)
    return (f"cluster {cluster.id}: {len(cluster.nodes)} nodes x {cluster.ranks_per_node} ranks, inter-node egress "
            f"{cluster.inter_rate or 'unshaped'} (tbf), interface {cluster.ifname}; nodes: {nodes}; "
            f"launch template: ip netns exec {{node}}")
