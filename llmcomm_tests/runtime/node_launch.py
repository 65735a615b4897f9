"""Start torchrun on every node through a command template; report a crash by rank *and* node.

One command per node, built from a template the cluster provides::

    "ip netns exec {node}"            emulated cluster (runtime/netns.py)
    "ssh {host}"                      plain hosts
    "srun -N1 -n1 -w {host}"          one Slurm step per node inside an allocation
    ""                                plain local processes (tests; no namespaces needed)

followed by ``env K=V … python -m torch.distributed.run --nnodes N --nproc-per-node R
--rdzv-backend c10d --rdzv-endpoint <node 0>:<port> --local-addr <this node> -m
llmcomm_tests.runtime.node_rank …``.  c10d rendezvous: node 0's agent hosts the store; the global
rank is group_rank·R + local_rank, so ranks r·R … r·R+R−1 share one node whichever node joined
first (the rank → node map is read back from the ranks themselves).  ``--local-addr`` is given
because in a namespace torchrun would otherwise advertise the host name, which resolves outside it;
``--rdzv-conf is_host=1`` on node 0 only, because torchrun decides who hosts the store by matching
the endpoint against the machine's host name, which fails in a namespace (every agent then waits
as a client of a store nobody serves) and matches twice on one host (local template).

Results come back through a **shared folder**, not the rendezvous store: the store lives in node
0's agent and dies with it, and a crash report is needed exactly when something died.  Every rank
writes ``rank<R>.start.json`` (node, pid) before work, ``rank<R>.err`` when it raises, stacks on
SIGUSR1; rank 0 writes the run document (``llmcomm_tests.runtime.torchrun_entry --json``); each node's torchrun output
goes to ``node<i>.log``.  On one host (namespaces, local) a temporary folder is shared by
construction; on a real cluster pass a folder on the shared file system (Slurm: the job's working
directory; Kubernetes: a ReadWriteMany volume) — see ci/slurm and ci/kubernetes.

Failure handling matches the single-host launcher (runtime/launch.py): the first node to fail starts a
short grace period for the others' own errors, then everything is killed; the report names the
root-cause rank (one that raised or was killed, not one whose peer vanished under it) with its node.
On a timeout every rank still running dumps its stacks first, and the report singles out ranks stuck
outside communication from those waiting for them.  Every node command runs in its own session
and is killed as a process group; ranks on this host are killed by pid as a last resort.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from llmcomm_tests.runtime.launch import PEER_LOST_MARKERS, RankFailed, RankTimeout, _in_communication
from llmcomm_tests.runtime.netns import pid_alive

FAILURE_GRACE_S = 3.0  # after one node fails, how long the others get to report their own errors
STACK_GRACE_S = 1.5
KILL_GRACE_S = 3.0
POLL_S = 0.1
PR_SET_PDEATHSIG = 1  # linux/prctl.h
REPO_ROOT = Path(__file__).resolve().parents[2]


class NodeRankFailed(RankFailed):
    def __init__(self, message: str, ranks: list[int], nodes: list[str]):
        super().__init__(message, ranks)
        self.nodes = nodes


class NodeRankTimeout(RankTimeout):
    def __init__(self, message: str, ranks: list[int], nodes: list[str]):
        super().__init__(message, ranks)
        self.nodes = nodes


@dataclass(frozen=True)
class NodeTarget:
    name: str  # the node's name in reports ({node} in the template)
    addr: str  # address its agent advertises (--local-addr); node 0's hosts the rendezvous
    host: str = "localhost"  # {host} in the template (ssh, srun -w)
    env: dict = field(default_factory=dict)  # this node only, e.g. GLOO_SOCKET_IFNAME


@dataclass(frozen=True)
class NodeLaunch:
    template: str
    nodes: tuple  # NodeTarget, node 0 first
    ranks_per_node: int
    timeout_s: float = 600.0
    env: dict = field(default_factory=dict)  # every node
    python: str = sys.executable
    port: int | None = None  # rendezvous port on node 0 (None: picked per launch)
    results_dir: str | None = None  # a folder every node sees; each launch's folder is made in it

    @property
    def world_size(self) -> int:
        return len(self.nodes) * self.ranks_per_node


@dataclass
class NodeRun:
    results: Path
    rank_nodes: dict  # rank -> node name (what each rank reported)
    wall_s: float
    logs: dict  # node name -> torchrun output
    documents: dict = field(default_factory=dict)  # name -> parsed JSON, read before the folder goes

    def document(self, name: str = "run.json"):
        if name not in self.documents:
            raise KeyError(f"no document {name!r} came back (collected: {sorted(self.documents)})")
        return self.documents[name]


def subset(launch: NodeLaunch, nodes: int, ranks_per_node: int) -> NodeLaunch:
    """The first ``nodes`` nodes with ``ranks_per_node`` ranks each (a smaller world on the same cluster)."""
    return replace(launch, nodes=launch.nodes[:nodes], ranks_per_node=ranks_per_node)


def local_nodes(n: int, ranks_per_node: int, timeout_s: float = 600.0) -> NodeLaunch:
    """Two or more 'nodes' as plain local process trees on loopback: the same launcher path with a
    template that runs the command as is."""
    nodes = tuple(NodeTarget(f"local{i}", "127.0.0.1", env={"GLOO_SOCKET_IFNAME": "lo"}) for i in range(n))
    return NodeLaunch("", nodes, ranks_per_node, timeout_s)


def _free_port(addr: str) -> int:
    with socket.socket() as s:
        s.bind((addr, 0))
        return s.getsockname()[1]


def node_command(launch: NodeLaunch, index: int, port: int, rdzv_id: str, results: Path, target: str,
                 args: list[str]) -> list[str]:
    node = launch.nodes[index]
    prefix = shlex.split(launch.template.format(node=node.name, host=node.host, index=index,
                                                nodes=len(launch.nodes), ranks_per_node=launch.ranks_per_node))
    env = {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "LLMCOMM_NODE": node.name,
           **launch.env, **node.env}
    return prefix + ["env", *(f"{k}={v}" for k, v in env.items()), launch.python, "-m", "torch.distributed.run",
                     "--nnodes", str(len(launch.nodes)), "--nproc-per-node", str(launch.ranks_per_node),
                     "--rdzv-backend", "c10d", "--rdzv-endpoint", f"{launch.nodes[0].addr}:{port}",
                     "--rdzv-id", rdzv_id, "--rdzv-conf", f"is_host={int(index == 0)}", "--local-addr", node.addr, "--max-restarts", "0",
                     "--monitor-interval", "0.1", "--log-dir", str(results / f"torchelastic-node{index}"),
                     "-m", "llmcomm_tests.runtime.node_rank", "--results", str(results), "--node-name", node.name,
                     "--target", target, "--", *args]


def emulated_nodes(cluster, timeout_s: float = 600.0, env: dict | None = None) -> NodeLaunch:
    """The launch for a cluster from netns.up: template ``ip netns exec {node}``, gloo on llm0."""
    nodes = tuple(NodeTarget(n.name, n.addr, env={"GLOO_SOCKET_IFNAME": cluster.ifname}) for n in cluster.nodes)
    return NodeLaunch("ip netns exec {node}", nodes, cluster.ranks_per_node, timeout_s, dict(env or {}))


def run_on_nodes(launch: NodeLaunch, target: str, args: list[str], results: "Path | None" = None,
                 keep_results: bool = False, collect: tuple = ("run.json", "rows.json")) -> NodeRun:
    """Run ``target`` (``module:function(argv) -> int``) on every rank of every node; ``{results}``
    in ``args`` becomes the shared folder.

    ``results``: the shared folder (a fresh temporary one by default, removed afterwards unless
    ``keep_results``; the caller reads the documents from the returned NodeRun before that).
    The JSON files named in ``collect`` that the ranks wrote there are read into the NodeRun.
    Raises NodeRankFailed / NodeRankTimeout naming ranks and nodes; nothing is left running."""
    own = results is None
    results = Path(tempfile.mkdtemp(prefix="llmcomm-nodes-", dir=launch.results_dir)) if own else Path(results)
    results.mkdir(parents=True, exist_ok=True)
    os.chmod(results, 0o755)
    local = all(n.addr.startswith("127.") for n in launch.nodes)
    port = launch.port or (_free_port(launch.nodes[0].addr) if local else random.randint(29600, 39999))
    rdzv_id = f"llmcomm-{os.getpid()}-{time.monotonic_ns()}"
    procs, logs = [], []
    start = time.monotonic()
    try:
        for i in range(len(launch.nodes)):
            log = open(results / f"node{i}.log", "w")
            logs.append(log)
            cmd = node_command(launch, i, port, rdzv_id, results, target,
                               [a.replace("{results}", str(results)) for a in args])
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, cwd=str(REPO_ROOT), preexec_fn=_end_with_launcher))
        _wait(launch, procs, results)
        documents = {name: json.loads((results / name).read_text()) for name in collect
                     if (results / name).is_file()}
        return NodeRun(results, _rank_nodes(results), time.monotonic() - start, _logs(launch, results), documents)
    finally:
        _kill(procs, results)
        for log in logs:
            log.close()
        if own and not keep_results:
            shutil.rmtree(results, ignore_errors=True)


def _end_with_launcher() -> None:
    """In the node command's process, before it runs: SIGTERM when the launcher dies, however it
    dies (PR_SET_PDEATHSIG survives the exec of ``ip netns exec``/``env``/python, which keep the
    pid).  torchrun stops its ranks on SIGTERM, so a SIGKILLed pytest leaves no agent or rank
    waiting for gloo's timeout."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() == 1:  # the launcher died before the line above
        os.kill(os.getpid(), signal.SIGTERM)


def _wait(launch: NodeLaunch, procs: list, results: Path) -> None:
    deadline = time.monotonic() + launch.timeout_s
    first_failure = None
    while True:
        codes = [p.poll() for p in procs]
        if all(c == 0 for c in codes):
            return
        failed = any(c not in (None, 0) for c in codes)
        now = time.monotonic()
        if failed and first_failure is None:
            first_failure = now
        if first_failure is not None and (all(c is not None for c in codes) or now - first_failure > FAILURE_GRACE_S):
            raise _failure(launch, procs, results)
        if now >= deadline:
            raise _timeout(launch, results)
        time.sleep(POLL_S)


def _starts(results: Path) -> dict[int, dict]:
    """Every rank's start record, by rank (one being written as we read is skipped: its node is
    in the node's log)."""
    out = {}
    for path in results.glob("rank*.start.json"):
        try:
            data = json.loads(path.read_text())
            out[int(data["rank"])] = data
        except ValueError:
            pass
    return dict(sorted(out.items()))


def _rank_nodes(results: Path) -> dict[int, str]:
    return {rank: start["node"] for rank, start in _starts(results).items()}


def _logs(launch: NodeLaunch, results: Path) -> dict[str, str]:
    out = {}
    for i, node in enumerate(launch.nodes):
        path = results / f"node{i}.log"
        out[node.name] = path.read_text(errors="replace") if path.exists() else ""
    return out


# torchrun's failure summary: "rank      : 3 (local_rank: 1)\n  exitcode  : -9 (pid: 123)"
_SUMMARY = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*\d+\)\s*\n\s*exitcode\s*:\s*(-?\d+)")


def _failure(launch: NodeLaunch, procs: list, results: Path) -> NodeRankFailed:
    starts = _starts(results)
    errors: dict[int, str] = {}
    for path in results.glob("rank*.err"):
        rank = int(path.name[4:-4])
        errors[rank] = path.read_text(errors="replace")
    logs = _logs(launch, results)
    node_of = {r: s["node"] for r, s in starts.items()}
    killed: dict[int, int] = {}
    for i, node in enumerate(launch.nodes):
        for rank, code in _SUMMARY.findall(logs[node.name]):
            rank, code = int(rank), int(code)
            node_of.setdefault(rank, node.name)
            if rank not in errors:
                how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
                errors[rank] = (f"rank {rank} on node {node.name}: {how} without a Python error; "
                                f"node log tail:\n{_tail(_before_summary(logs[node.name]), 20)}")
                if code < 0:
                    killed[rank] = -code
    if not errors:  # no rank said anything: the node's torchrun agent itself failed, or was killed
        bad = [(launch.nodes[i].name, p.returncode) for i, p in enumerate(procs) if p.returncode not in (None, 0)]
        tail = "\n".join(f"--- node {n} (exit {c}) ---\n" + _tail(logs[n]) for n, c in bad)
        started = {n: sorted(r for r, s in starts.items() if s.get("node") == n) for n, _ in bad}
        if any(started.values()):
            what = "; ".join(f"the torchrun agent of node {n} {_how(c)} after its ranks {started[n]} had started"
                             for n, c in bad)
            return NodeRankFailed(f"{what}:\n{tail}", sorted(r for rs in started.values() for r in rs),
                                  [n for n, _ in bad])
        return NodeRankFailed(f"node(s) {[n for n, _ in bad]} failed before any rank reported "
                              f"({'; '.join(f'{n}: torchrun agent {_how(c)}' for n, c in bad)}):\n{tail}", [],
                              [n for n, _ in bad])

    def symptom(rank: int) -> int:
        """0: a cause (raised on its own, or killed from outside); 1: stopped by its agent (SIGTERM
        once a sibling failed); 2: saw its peer vanish."""
        if rank in killed:
            return 1 if killed[rank] in (signal.SIGTERM, signal.SIGINT) else 0
        return 2 if any(m in errors[rank] for m in PEER_LOST_MARKERS) else 0

    first = min(errors, key=lambda r: (symptom(r), r))
    others = sorted(set(errors) - {first})
    listed = ", ".join(f"rank {r} on {node_of.get(r, '?')}" for r in others)
    also = f" (also failed: {listed})" if others else ""
    node = node_of.get(first, "?")
    return NodeRankFailed(f"rank {first} on node {node} failed{also}:\n{errors[first]}", sorted(errors),
                          sorted({node_of.get(r, "?") for r in errors}))


def _how(code: int) -> str:
    return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"


def _before_summary(log: str) -> str:
    """A node log up to torchrun's own failure summary (what the ranks said, not the agent)."""
    cut = log.find("ChildFailedError")
    return log[:cut] if cut >= 0 else log


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _timeout(launch: NodeLaunch, results: Path) -> NodeRankTimeout:
    starts = _starts(results)
    hung = [r for r, s in starts.items() if pid_alive(s["pid"])]
    for rank in hung:  # pids are this host's: namespaces share it; on remote nodes nothing happens
        try:
            os.kill(starts[rank]["pid"], signal.SIGUSR1)
        except (ProcessLookupError, PermissionError):
            pass
    time.sleep(STACK_GRACE_S)
    stacks = {}
    for r in hung:
        path = results / f"stacks{r}.txt"
        stacks[r] = path.read_text(errors="replace").strip() if path.exists() else "(no stacks written)"
    waiting = [r for r in hung if _in_communication(stacks[r])]
    stuck = [r for r in hung if r not in waiting]
    where = {r: starts[r]["node"] for r in hung}
    if stuck and waiting:
        verdict = (f"rank(s) {', '.join(f'{r} on {where[r]}' for r in stuck)} stuck outside communication, "
                   f"{waiting} waiting in a collective for them")
    else:
        verdict = f"ranks still running: {', '.join(f'{r} on {where[r]}' for r in hung) or 'none started'}"
    text = "\n".join(f"--- rank {r} on {where[r]} stacks ---\n{stacks[r]}" for r in hung)
    blamed = stuck or hung
    return NodeRankTimeout(f"timed out after {launch.timeout_s:g} s; {verdict}\n{text}", blamed,
                           sorted({where[r] for r in blamed}))


def _kill(procs: list, results: Path) -> None:
    """Every node's process group (SIGTERM: torchrun stops its workers; then SIGKILL), then any rank
    of this host still alive by pid (a worker that left the group)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        live = [p for p in procs if p.poll() is None]
        if not live:
            break
        for p in live:
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline and any(p.poll() is None for p in live):
            time.sleep(0.05)
    for p in procs:
        try:
            p.wait(1)
        except subprocess.TimeoutExpired:
            pass
    for s in _starts(results).values():
        if pid_alive(s["pid"]) and s.get("host") == socket.gethostname():
            try:
                os.kill(s["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcomm_tests.runtime.node_launch --template T --hosts a,b --ranks-per-node R
    --results-dir DIR -- <llmcomm_tests.runtime.torchrun_entry arguments, {results} = DIR>`` (ci/slurm uses it)."""
    parser = argparse.ArgumentParser(prog="python -m llmcomm_tests.runtime.node_launch")
    parser.add_argument("--template", required=True, help='e.g. "srun -N1 -n1 -w {host} --overlap", "ssh {host}"')
    parser.add_argument("--hosts", required=True, help="comma-separated, node 0 (rendezvous host) first")
    parser.add_argument("--addrs", default=None, help="addresses the agents advertise (default: the hosts)")
    parser.add_argument("--ranks-per-node", type=int, required=True)
    parser.add_argument("--results-dir", required=True, help="a folder every node sees")
    parser.add_argument("--timeout", type=float, default=1800.0)
    parser.add_argument("--env", action="append", default=[], help="K=V for every node (repeatable)")
    parser.add_argument("--target", default="llmcomm_tests.runtime.torchrun_entry:main")
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    hosts = [h for h in args.hosts.split(",") if h]
    addrs = args.addrs.split(",") if args.addrs else hosts
    if len(addrs) != len(hosts):
        print("node_launch: --addrs must list one address per host", file=sys.stderr)
        return 2
    env = dict(kv.split("=", 1) for kv in args.env)
    launch = NodeLaunch(args.template, tuple(NodeTarget(h, a, h) for h, a in zip(hosts, addrs)), args.ranks_per_node,
                        args.timeout, env)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    try:
        run = run_on_nodes(launch, args.target, rest, results=Path(args.results_dir))
    except (NodeRankFailed, NodeRankTimeout) as exc:
        print(f"node_launch: {exc}", file=sys.stderr)
        return 1
    print(f"{len(hosts)} nodes x {args.ranks_per_node} ranks done in {run.wall_s:.1f} s; ranks: {run.rank_nodes}; "
          f"results in {run.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
