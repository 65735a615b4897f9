"""A spec's ``topology:`` section: how many nodes, how ranks sit on them, and how to start them.

    topology:
      nodes: 2
      ranks_per_node: 2
      emulate: true              # build the nodes as network namespaces on this host (runtime/netns.py)
      inter_rates: [200mbit, 1gbit]   # emulate only: one pass of the cases per shaped link rate
      nics_per_node: 1           # inter-node links per node (the advisor's / predictor's view)

A spec is data: it never names a command, a host or a folder to write in (docs/security.md).  Real
nodes — the launcher's template, the hosts, the shared results folder — come from the session
(``--llmcomm-node-cmd``, ``--llmcomm-hosts``, ``--llmcomm-results-dir``, their ini keys or
environment variables); a spec that sets ``node_cmd``, ``hosts`` or ``results_dir`` gets a
one-line error saying where to put it.

Parsed into a typed ``Topology``; errors are one line naming the file and the field.  The session's
options can give a topology to specs without one (:func:`for_session`).  A case with a topology
starts its ranks through runtime/node_launch.py (measure.run_engine), rank r on node r // ranks_per_node.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from llmcomm_tests.core.units import describe, rate_bytes_per_s

FIELDS = {"nodes", "ranks_per_node", "emulate", "inter_rates", "nics_per_node"}
# What only the session may set: a spec that sets one is told where it goes instead.
SESSION_ONLY = {"node_cmd": ("the command that starts a node", "--llmcomm-node-cmd", "llmcomm_node_cmd"),
                "hosts": ("hosts", "--llmcomm-hosts", "llmcomm_hosts"),
                "results_dir": ("a folder to write in", "--llmcomm-results-dir", "llmcomm_results_dir")}


class TopologyError(ValueError):
    pass


@dataclass(frozen=True)
class Topology:
    nodes: int
    ranks_per_node: int
    emulate: bool = False
    inter_rates: tuple = ()  # tc rates, emulate only; () = unshaped
    nics_per_node: int | None = None
    node_cmd: str | None = None
    hosts: tuple = ()
    results_dir: str | None = None
    where: str = field(default="", compare=False)  # file for messages

    @property
    def world_size(self) -> int:
        return self.nodes * self.ranks_per_node


def parse(data: dict, where: str = "spec") -> Topology:
    if not isinstance(data, dict):
        raise TopologyError(f"{where}: topology must be a mapping")
    for key in sorted(set(data) & set(SESSION_ONLY)):
        what, flag, ini = SESSION_ONLY[key]
        raise TopologyError(f"{where}: topology.{key}: a spec is data and cannot set {what}; give {flag} on the "
                            f"command line or {ini} in the ini file")
    unknown = set(data) - FIELDS
    if unknown:
        raise TopologyError(f"{where}: topology: unknown field(s) {', '.join(sorted(unknown))}; known: "
                            f"{', '.join(sorted(FIELDS))}")
    for key in ("nodes", "ranks_per_node"):
        _require_count(data.get(key), where, key)
    rates = data.get("inter_rates") or []
    if isinstance(rates, str):
        rates = [rates]
    for rate in rates:
        try:
            rate_bytes_per_s(str(rate))
        except ValueError as exc:
            raise TopologyError(f"{where}: topology.inter_rates: {exc}") from None
    emulate = bool(data.get("emulate", False))
    if not emulate and data["nodes"] > 1:
        raise TopologyError(f"{where}: topology with {data['nodes']} nodes needs emulate: true (real nodes come "
                            f"from --llmcomm-node-cmd and --llmcomm-hosts, not from a spec)")
    if rates and not emulate:
        raise TopologyError(f"{where}: topology.inter_rates shapes an emulated link only (emulate: true)")
    nics = data.get("nics_per_node")
    if nics is not None:
        _require_count(nics, where, "nics_per_node")
    return Topology(data["nodes"], data["ranks_per_node"], emulate, tuple(str(r) for r in rates), nics, where=where)


def _require_count(value, where: str, key: str) -> None:
    """A count typed in YAML: an integer >= 1 (a boolean or a quoted number is refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TopologyError(f"{where}: topology.{key} must be an integer >= 1, got {describe(value)}")


def for_session(given: Topology | None, widest: int, emulate_nodes: int | None, ranks_per_node: int | None,
                inter_rates: tuple, node_cmd: str | None, hosts: tuple, results_dir: str | None) -> Topology | None:
    """A spec's topology under the session's options: ``given`` (the spec's own) wins over
    ``--llmcomm-emulate-nodes`` / ``--llmcomm-node-cmd``; ``--llmcomm-inter-rate`` replaces an emulated
    topology's rates.  Without ``--llmcomm-ranks-per-node`` the spec's widest layout (``widest``
    ranks) is spread over the nodes."""
    topology = given
    nodes = emulate_nodes or (len(hosts) if node_cmd else None)
    if topology is None and nodes:
        per_node = ranks_per_node or -(-widest // nodes)
        topology = Topology(nodes, per_node, emulate=bool(emulate_nodes), node_cmd=node_cmd, hosts=tuple(hosts),
                            results_dir=results_dir, where="the --llmcomm-* node options")
    if topology is not None and topology.emulate and inter_rates:
        topology = replace(topology, inter_rates=tuple(inter_rates))
    return topology
