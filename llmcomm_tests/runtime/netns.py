"""An emulated cluster on one host: one network namespace per node, a shaped link between nodes.

Layout (``up``)::

    llmc-<id>-n0 ─ llm0 ═══ veth ═══ n0 ┐
    llmc-<id>-n1 ─ llm0 ═══ veth ═══ n1 ┼─ br0 in llmc-<id>-sw (a switch namespace)
    ...                                  ┘

* Every node namespace has loopback plus one interface, named ``llm0`` in all of them, so one
  ``GLOO_SOCKET_IFNAME=llm0`` serves every node (gloo needs one concrete interface per namespace).
* Ranks of one node talk over that namespace's loopback, even when they address ``llm0`` (the
  kernel routes local addresses through ``lo``): the fast *intra* tier.  Ranks of different nodes
  cross their veths and the bridge: the *inter* tier.
* ``tbf`` on every node's ``llm0`` egress caps what a node can send to the rest at ``inter_rate``
  (one NIC per node: every byte leaving a node goes through it).  Delay is not added: kernels
  without ``netem`` cannot (docs/measurements.md#emulated-cluster).
* The bridge lives in its own namespace, so nothing is created in the host's namespace and only
  addresses inside namespaces we create are used (10.231.K.0/24, K free per cluster).

Leaving nothing behind: the registry (one JSON file per cluster in :func:`registry_dir`) is written
*before* each namespace is created, so ``down`` — by the owner, or ``reap_stale`` at the next
start once the owner is gone — removes everything even after a crash halfway through ``up``.
``down`` kills every process still inside a node namespace (``ip netns pids``) before deleting it.

Root acts on these records, so they are private state (docs/security.md): the registry is a
folder of this user's, mode 0700, refused when it is a symlink, another user's or open to others
(core/private_files.py); every record is checked against the names this module gives (``ID`` and
the ``llmc-<id>-n<i>`` / ``-sw`` namespaces) before any of it is used, and a record that does not
match is refused, never acted on.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import signal
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llmcomm_tests.core.private_files import UnsafePath, check_private_dir, create_new, read_regular
from llmcomm_tests.core.units import rate_bytes_per_s
from llmcomm_tests.runtime.procfs import running

_OUR_NAMESPACE = re.compile(r"llmc-[0-9a-z]{1,16}-(?:n\d{1,3}|sw)")
REGISTRY_ENV = "LLMCOMM_CLUSTER_REGISTRY"  # another place for the registry; checked like the default
ID = re.compile(r"[0-9a-z]{1,16}")  # a cluster id: file names and namespace names are built from it
PREFIX = "llmc-"  # every namespace we create starts with this; nothing else does
IFNAME = "llm0"
SUBNET = "10.231"  # 10.231.K.0/24, one K per live cluster
CMD_TIMEOUT_S = 10.0


class ClusterError(RuntimeError):
    """Namespaces could not be created or removed, or the registry is not safe; the message is one line."""


@dataclass(frozen=True)
class Node:
    name: str  # namespace name, also the node's name in reports
    addr: str  # address of its llm0


@dataclass
class Cluster:
    id: str
    ranks_per_node: int
    inter_rate: str | None  # tc rate ("200mbit"), None = unshaped
    subnet: int  # K of 10.231.K.0/24
    nodes: list[Node] = field(default_factory=list)
    switch: str = ""
    owner_pid: int | None = None  # reaped when this process is gone; None: kept until `down`
    ifname: str = IFNAME

    @property
    def namespaces(self) -> list[str]:
        return [n.name for n in self.nodes] + ([self.switch] if self.switch else [])

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Cluster":
        """A cluster record, refused (ValueError) unless every name in it is one ``up`` gives."""
        data = dict(data)
        data["nodes"] = [Node(**n) for n in data.get("nodes", [])]
        cluster = cls(**data)
        check_record(cluster)
        return cluster

    def node_of_rank(self, rank: int) -> Node:
        return self.nodes[rank // self.ranks_per_node]


def check_id(cluster_id: str) -> str:
    """``cluster_id`` when it is one of ours (``ID``), else ValueError: it names files and namespaces."""
    if not isinstance(cluster_id, str) or not ID.fullmatch(cluster_id):
        raise ValueError(f"bad cluster id {cluster_id!r}: an id is 1-16 lower-case letters or digits")
    return cluster_id


def check_record(cluster: Cluster) -> None:
    """ValueError unless the record names only what ``up`` creates for its id: namespaces
    ``llmc-<id>-n<i>`` and ``llmc-<id>-sw``, addresses in 10.231.K.0/24, the interface ``llm0``."""
    check_id(cluster.id)
    if not isinstance(cluster.subnet, int) or isinstance(cluster.subnet, bool) or not 1 <= cluster.subnet <= 254:
        raise ValueError(f"cluster {cluster.id}: bad subnet {cluster.subnet!r}")
    if cluster.switch not in ("", f"{PREFIX}{cluster.id}-sw") or cluster.ifname != IFNAME:
        raise ValueError(f"cluster {cluster.id}: switch {cluster.switch!r} / interface {cluster.ifname!r} are not ours")
    for i, node in enumerate(cluster.nodes):
        if node.name != f"{PREFIX}{cluster.id}-n{i}" or node.addr != f"{SUBNET}.{cluster.subnet}.{i + 1}":
            raise ValueError(f"cluster {cluster.id}: node {i} {node.name!r} {node.addr!r} is not one up() makes")
        ipaddress.IPv4Address(node.addr)
    if cluster.owner_pid is not None and (not isinstance(cluster.owner_pid, int) or cluster.owner_pid < 1):
        raise ValueError(f"cluster {cluster.id}: bad owner_pid {cluster.owner_pid!r}")


# -- shell helpers ---------------------------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(["ip", *args], check)


def _run(cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT_S)
    if check and proc.returncode:
        raise ClusterError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def existing_namespaces() -> list[str]:
    proc = _ip("netns", "list", check=False)
    return [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]


def namespace_pids(ns: str) -> list[int]:
    proc = _ip("netns", "pids", ns, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def can_create_namespaces() -> tuple[bool, str]:
    """(True, "") when this process may create namespaces and veths, else (False, why)."""
    name = f"{PREFIX}probe-{os.getpid()}"
    try:
        proc = _ip("netns", "add", name, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot run `ip netns`: {exc}"
    if proc.returncode:
        return False, f"cannot create a network namespace: {proc.stderr.strip()}"
    try:
        veth = _ip("-n", name, "link", "add", "a0", "type", "veth", "peer", "name", "a1", check=False)
        tbf = _ip("netns", "exec", name, "tc", "qdisc", "add", "dev", "a0", "root", "tbf", "rate", "1mbit",
                  "burst", "16kb", "latency", "50ms", check=False) if not veth.returncode else veth
    finally:
        _ip("netns", "del", name, check=False)
    if veth.returncode:
        return False, f"cannot create a veth pair: {veth.stderr.strip()}"
    if tbf.returncode:
        return False, f"cannot add a tbf qdisc: {tbf.stderr.strip()}"
    return True, ""


# -- registry --------------------------------------------------------------------------------------


def default_registry() -> Path:
    """Where the registry lives unless ``LLMCOMM_CLUSTER_REGISTRY`` says: root's under /run (root's
    own, not world-writable), another user's under XDG_RUNTIME_DIR, else a per-user folder in the
    system temp folder (refused there if someone else made it first)."""
    if os.geteuid() == 0 and os.path.isdir("/run"):
        return Path("/run/llmcomm-clusters")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime):
        return Path(runtime) / "llmcomm-clusters"
    return Path(tempfile.gettempdir()) / f"llmcomm-clusters-{os.geteuid()}"


def registry_dir(create: bool = True) -> Path:
    """The registry folder, checked private (core/private_files.py) every time it is used."""
    path = Path(os.environ.get(REGISTRY_ENV) or default_registry())
    try:
        return check_private_dir(path, create=create)
    except UnsafePath as exc:
        raise ClusterError(f"cluster registry: {exc}") from None


def _registry_path(cluster_id: str) -> Path:
    return registry_dir() / f"{check_id(cluster_id)}.json"


def _save(cluster: Cluster) -> None:
    check_record(cluster)
    final = _registry_path(cluster.id)
    tmp = final.with_name(f"{cluster.id}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover of a crash (unlink never follows a symlink)
    with os.fdopen(create_new(tmp), "w") as f:
        f.write(json.dumps(cluster.to_dict(), indent=1))
    os.replace(tmp, final)


def registered() -> list[Cluster]:
    """Every registered cluster; a record that is torn or names what is not ours is dropped
    (its namespaces, if any, are ours only when they carry PREFIX and go in ``down_all``)."""
    out = []
    registry = registry_dir()
    for path in sorted(registry.glob("*.json")):
        if not ID.fullmatch(path.stem):
            continue
        try:
            cluster = Cluster.from_dict(json.loads(read_regular(path)))
            if cluster.id != path.stem:
                raise ValueError(f"record {path.name} names cluster {cluster.id!r}")
            out.append(cluster)
        except (ValueError, TypeError, KeyError, AttributeError, OSError, UnsafePath):
            path.unlink(missing_ok=True)
    return out


def load_cluster(cluster_id: str) -> Cluster:
    """The emulated cluster registered under ``cluster_id`` (by ``up``)."""
    path = _registry_path(cluster_id)
    try:
        text = read_regular(path)
    except FileNotFoundError:
        raise ClusterError(f"no emulated cluster {cluster_id!r} (registry {path.parent})") from None
    except (OSError, UnsafePath) as exc:
        raise ClusterError(f"cluster {cluster_id!r}: registry record refused: {exc}") from None
    try:
        cluster = Cluster.from_dict(json.loads(text))
        if cluster.id != cluster_id:
            raise ValueError(f"the record names cluster {cluster.id!r}")
        return cluster
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ClusterError(f"cluster {cluster_id!r}: registry record refused: {exc}") from None


def pid_alive(pid: int) -> bool:
    """A live process (a zombie counts as dead: it only waits to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return running(pid)


# -- up / down -------------------------------------------------------------------------------------


def _free_subnet() -> int:
    used = {c.subnet for c in registered()}
    for k in range(1, 255):
        if k not in used:
            return k
    raise ClusterError("no free 10.231.K.0/24 subnet: 254 emulated clusters registered")


def up(nodes: int, ranks_per_node: int, inter_rate: str | None = "200mbit", *, owner_pid: int | None = None,
       cluster_id: str | None = None) -> Cluster:
    """Create the namespaces, veths, bridge and shaping; return the registered cluster.

    ``owner_pid``: the process whose exit makes the cluster stale (reaped by ``reap_stale``);
    None keeps it until ``down`` (``llmcomm cluster up``)."""
    if nodes < 1 or ranks_per_node < 1:
        raise ValueError("nodes and ranks_per_node must be >= 1")
    if nodes > 250:
        raise ValueError("at most 250 emulated nodes")
    if inter_rate is not None:
        rate_bytes_per_s(inter_rate)  # refuse a bad rate before creating anything
    if cluster_id is not None:
        check_id(cluster_id)
    reap_stale()
    cluster = Cluster(id=cluster_id or secrets.token_hex(3), ranks_per_node=ranks_per_node, inter_rate=inter_rate,
                      subnet=_free_subnet(), owner_pid=owner_pid)
    cluster.switch = f"{PREFIX}{cluster.id}-sw"
    cluster.nodes = [Node(f"{PREFIX}{cluster.id}-n{i}", f"{SUBNET}.{cluster.subnet}.{i + 1}") for i in range(nodes)]
    _save(cluster)  # before anything exists: a crash from here on is still cleaned up
    try:
        _ip("netns", "add", cluster.switch)
        _ip("-n", cluster.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", cluster.switch, "link", "set", "br0", "up")
        for i, node in enumerate(cluster.nodes):
            _ip("netns", "add", node.name)
            _ip("-n", node.name, "link", "set", "lo", "up")
            _ip("-n", node.name, "link", "add", cluster.ifname, "type", "veth", "peer", "name", f"n{i}",
                "netns", cluster.switch)
            _ip("-n", node.name, "addr", "add", f"{node.addr}/24", "dev", cluster.ifname)
            _ip("-n", node.name, "link", "set", cluster.ifname, "up")
            _ip("-n", cluster.switch, "link", "set", f"n{i}", "master", "br0")
            _ip("-n", cluster.switch, "link", "set", f"n{i}", "up")
            if inter_rate is not None:
                shape(cluster, node.name, inter_rate)
    except BaseException:
        down(cluster)
        raise
    return cluster


def shape(cluster: Cluster, node: str, rate: str) -> None:
    """tbf on the node's egress.  burst: 1 ms of the rate (≥ 16 KiB), enough for bulk TCP to come
    near the rate; a larger bucket lets the engine's 16–64 KiB messages through at memory speed, which
    is not a link of that rate (docs/measurements.md#emulated-cluster).  latency: 200 ms of queue
    before drops."""
    _ip("netns", "exec", node, "tc", "qdisc", "replace", "dev", cluster.ifname, "root", "tbf", "rate", rate,
        "burst", str(burst_bytes(rate)), "latency", "200ms")


def burst_bytes(rate: str) -> int:
    """The bucket ``shape`` gives a rate: what a message can send at memory speed when it is full."""
    return max(16 * 1024, int(rate_bytes_per_s(rate) / 1000))


def set_rate(cluster: Cluster, rate: str) -> Cluster:
    """Change the inter-node rate of a running cluster (no restart of anything)."""
    for node in cluster.nodes:
        shape(cluster, node.name, rate)
    cluster.inter_rate = rate
    _save(cluster)
    return cluster


def link_tx_bytes(cluster: Cluster) -> dict[str, int]:
    """Bytes each node has sent on its inter-node interface (the kernel's counter, headers included)."""
    out = {}
    for node in cluster.nodes:
        proc = _ip("netns", "exec", node.name, "cat", f"/sys/class/net/{cluster.ifname}/statistics/tx_bytes")
        out[node.name] = int(proc.stdout.strip())
    return out


def _kill_namespace_processes(ns: str, grace_s: float = 2.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = namespace_pids(ns)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.05)


def down(cluster: "Cluster | str") -> list[str]:
    """Kill what runs inside, delete every namespace (their veths go with them), forget the cluster.
    Returns the namespaces removed."""
    if isinstance(cluster, str):
        cluster = load_cluster(cluster)
    check_record(cluster)
    present = set(existing_namespaces())
    removed = []
    for ns in cluster.namespaces:
        if ns in present:
            _kill_namespace_processes(ns)
            _ip("netns", "del", ns, check=False)
            removed.append(ns)
    left = set(existing_namespaces()) & set(cluster.namespaces)
    if left:
        raise ClusterError(f"could not remove namespace(s) {sorted(left)}")
    _registry_path(cluster.id).unlink(missing_ok=True)
    return removed


def down_all() -> list[str]:
    """Every registered cluster, then any stray ``llmc-*`` namespace (a torn registry file)."""
    removed = []
    for cluster in registered():
        removed += down(cluster)
    for ns in existing_namespaces():
        if ns.startswith(PREFIX) and _OUR_NAMESPACE.fullmatch(ns):
            _kill_namespace_processes(ns)
            _ip("netns", "del", ns, check=False)
            removed.append(ns)
    return removed


def reap_stale() -> list[str]:
    """Remove clusters whose owner process is gone (a crashed or killed session)."""
    removed = []
    for cluster in registered():
        if cluster.owner_pid is not None and not pid_alive(cluster.owner_pid):
            removed += down(cluster)
    return removed


def up_owned(nodes: int, ranks_per_node: int, inter_rate: str | None = "200mbit") -> Cluster:
    """``up`` owned by this process: should it end without ``release`` (killed, crashed), the next
    ``reap_stale`` removes the cluster.  Its owner closes it: a pytest session's resources
    (suite/resources.py), or the caller's own ``try``/``finally``."""
    return up(nodes, ranks_per_node, inter_rate, owner_pid=os.getpid())


def release(cluster: Cluster) -> list[str]:
    """``down`` for a cluster from ``up_owned``."""
    return down(cluster)
