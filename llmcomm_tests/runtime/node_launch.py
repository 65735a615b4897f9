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

The template is split into words first and ``{node}`` / ``{host}`` are filled into those words,
so a value is always one argument (never an option: values starting with ``-`` are refused); the
command after it is a list of arguments, except after ``ssh``, which joins its arguments into one
string for the remote user's shell: there it is passed as one ``shlex.join``-quoted string.  Each
launch's results go to a fresh private folder (mode 0700, a random name) made inside the folder
given; its files are created ``O_EXCL | O_NOFOLLOW`` (docs/security.md).

Failure handling matches the single-host launcher (runtime/launch.py): the first node to fail starts a
short grace period for the others' own errors, then everything is killed; the report names the
root-cause rank (one that raised or was killed, not one whose peer vanished under it) with its node.
On a timeout every rank still running dumps its stacks first, and the report singles out ranks stuck
outside communication from those waiting for them.  Every node command runs in its own session
and is killed as a process group; signals go only to processes of those sessions (read from the
kernel, never a pid from a file in the results folder), so remote ranks are stopped by stopping
their node's command, and they dump no stacks.
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

from llmcomm_tests.core.private_files import make_private_subdir, open_new
from llmcomm_tests.runtime.launch import PEER_LOST_MARKERS, RankFailed, RankTimeout, _in_communication
from llmcomm_tests.runtime.procfs import all_processes, proc_stat

FAILURE_GRACE_S = 3.0  # after one node fails, how long the others get to report their own errors
STACK_GRACE_S = 1.5
KILL_GRACE_S = 3.0
POLL_S = 0.1
SCAN_S = 1.0  # how often the launcher notes the processes its node commands made (/proc)
PR_SET_PDEATHSIG = 1  # linux/prctl.h
REPO_ROOT = Path(__file__).resolve().parents[2]
REMOTE_SHELLS = {"ssh"}  # launchers that hand their command to the remote user's shell as one string
# A host or node name as it is put into a template: no option, no blank, no shell syntax.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:%@\[\]-]*")


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


def check_name(value: str, what: str) -> str:
    """``value`` when it is a plain host or node name (``NAME``), else ValueError: it goes into a
    command template, where ``-oProxyCommand=…`` would be an option and a blank a second argument."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ValueError(f"bad {what} {value!r}: a {what} is letters, digits and _.:%@[]- and does not start "
                         f"with '-'")
    return value


def template_words(template: str, **fields) -> list[str]:
    """The template's words with ``{node}``, ``{host}``… filled in: split first, so that whatever a
    value holds stays inside the one word that named it."""
    return [word.format(**fields) for word in shlex.split(template)]


def node_command(launch: NodeLaunch, index: int, port: int, rdzv_id: str, results: Path, target: str,
                 args: list[str]) -> list[str]:
    node = launch.nodes[index]
    prefix = template_words(launch.template, node=check_name(node.name, "node name"),
                            host=check_name(node.host, "host"), index=index, nodes=len(launch.nodes),
                            ranks_per_node=launch.ranks_per_node)
    env = {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "LLMCOMM_NODE": node.name,
           **launch.env, **node.env}
    command = _torchrun_command(launch, index, port, rdzv_id, results, target, args, env)
    if prefix and os.path.basename(prefix[0]) in REMOTE_SHELLS:
        return prefix + [shlex.join(command)]
    return prefix + command


def _torchrun_command(launch: NodeLaunch, index: int, port: int, rdzv_id: str, results: Path, target: str,
                      args: list[str], env: dict) -> list[str]:
    node = launch.nodes[index]
    return ["env", *(f"{k}={v}" for k, v in env.items()), launch.python, "-m", "torch.distributed.run",
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

    ``results``: the shared folder, made here (mode 0700) and refused if it exists; by default a
    fresh private one inside ``launch.results_dir`` (or the temp folder), removed afterwards unless
    ``keep_results``; the caller reads the documents from the returned NodeRun before that.
    The JSON files named in ``collect`` that the ranks wrote there are read into the NodeRun.
    Raises NodeRankFailed / NodeRankTimeout naming ranks and nodes; nothing is left running."""
    for node in launch.nodes:  # refused before anything starts
        check_name(node.name, "node name"), check_name(node.host, "host")
    own = results is None
    if own:
        results = make_private_subdir(launch.results_dir or tempfile.gettempdir(), "llmcomm-nodes-")
    else:
        results = Path(results)
        os.mkdir(results, 0o700)  # FileExistsError: a folder someone else may have prepared is not used
    local = all(n.addr.startswith("127.") for n in launch.nodes)
    port = launch.port or (_free_port(launch.nodes[0].addr) if local else random.randint(29600, 39999))
    rdzv_id = f"llmcomm-{os.getpid()}-{time.monotonic_ns()}"
    procs, logs = [], []
    seen: dict[int, int] = {}  # every process the node commands made, as _wait saw them
    start = time.monotonic()
    try:
        for i in range(len(launch.nodes)):
            log = open_new(results / f"node{i}.log")
            logs.append(log)
            cmd = node_command(launch, i, port, rdzv_id, results, target,
                               [a.replace("{results}", str(results)) for a in args])
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          start_new_session=True, cwd=str(REPO_ROOT), preexec_fn=_end_with_launcher))
        _wait(launch, procs, results, seen)
        documents = {name: json.loads((results / name).read_text()) for name in collect
                     if (results / name).is_file()}
        return NodeRun(results, _rank_nodes(results), time.monotonic() - start, _logs(launch, results), documents)
    finally:
        _kill(procs, seen)
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


def _wait(launch: NodeLaunch, procs: list, results: Path, seen: dict) -> None:
    deadline = time.monotonic() + launch.timeout_s
    first_failure = None
    next_scan = 0.0
    while True:
        if time.monotonic() >= next_scan:  # ranks a dying agent leaves behind are still known
            seen.update(launched_processes(procs))
            next_scan = time.monotonic() + SCAN_S
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
            raise _timeout(launch, procs, results)
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


def launched_processes(procs: list) -> dict[int, int]:
    """Processes of this host that the node commands we started made: their descendants (torchrun
    starts each rank in a session of its own) and members of their sessions, read from the kernel
    (/proc), as pid -> start time.  A pid named in a file is signalled only when it is in here."""
    stats = all_processes()
    roots = {p.pid for p in procs if p.poll() is None}
    children: dict[int, list[int]] = {}
    for pid, st in stats.items():
        children.setdefault(st.ppid, []).append(pid)
    found, todo = set(), list(roots)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    # A worker that left its parent (reparented) still carries our session; a leader itself is not
    # picked by its session id (that pid may have been reused once our leader was reaped).
    sessions = {p.pid for p in procs}
    found |= {pid for pid, st in stats.items() if st.session in sessions and pid not in sessions}
    return {pid: stats[pid].start_time for pid in found}


def _signal_same(pid: int, started: int, sig: int) -> None:
    """``sig`` to ``pid`` if it is still the process that started at ``started`` (not a reused pid)."""
    st = proc_stat(pid)
    if st is not None and st.start_time == started:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _timeout(launch: NodeLaunch, procs: list, results: Path) -> NodeRankTimeout:
    starts = _starts(results)
    ours = launched_processes(procs)
    # A start record names a pid; only a rank that is one of our processes gets SIGUSR1 (remote
    # ranks are not on this host: they dump no stacks and stop with their node's command).
    hung = [r for r, s in starts.items() if isinstance(s.get("pid"), int) and s["pid"] in ours]
    for rank in hung:
        _signal_same(starts[rank]["pid"], ours[starts[rank]["pid"]], signal.SIGUSR1)
    remote = [r for r in starts if r not in hung]
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
    if remote:
        verdict += f"; rank(s) {remote} not on this host or not running (no stacks)"
    text = "\n".join(f"--- rank {r} on {where[r]} stacks ---\n{stacks[r]}" for r in hung)
    blamed = stuck or hung
    return NodeRankTimeout(f"timed out after {launch.timeout_s:g} s; {verdict}\n{text}", blamed,
                           sorted({where[r] for r in blamed}))


def _kill(procs: list, seen: dict) -> None:
    """Every node's process group (SIGTERM: torchrun stops its workers; then SIGKILL), then any
    process they made that is still alive (a worker in a session of its own, as torchrun starts them)."""
    ours = {**seen, **launched_processes(procs)}  # before the agents go: workers are found as their children
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
    for pid, started in ours.items():
        _signal_same(pid, started, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    """``python -m llmcomm_tests.runtime.node_launch --template T --hosts a,b --ranks-per-node R
    --results-dir DIR -- <llmcomm_tests.runtime.torchrun_entry arguments, {results} = DIR>`` (ci/slurm uses it)."""
    parser = argparse.ArgumentParser(prog="python -m llmcomm_tests.runtime.node_launch")
    parser.add_argument("--template", required=True, help='e.g. "srun -N1 -n1 -w {host} --overlap", "ssh {host}"')
    parser.add_argument("--hosts", required=True, help="comma-separated, node 0 (rendezvous host) first")
    parser.add_argument("--addrs", default=None, help="addresses the agents advertise (default: the hosts)")
    parser.add_argument("--ranks-per-node", type=int, required=True)
    parser.add_argument("--results-dir", required=True,
                        help="a folder every node sees; the launch's own private folder is made inside it")
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
                        args.timeout, env, results_dir=args.results_dir)
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    try:
        run = run_on_nodes(launch, args.target, rest, keep_results=True)
    except ValueError as exc:
        print(f"node_launch: {exc}", file=sys.stderr)
        return 2
    except (NodeRankFailed, NodeRankTimeout) as exc:
        print(f"node_launch: {exc}", file=sys.stderr)
        return 1
    print(f"{len(hosts)} nodes x {args.ranks_per_node} ranks done in {run.wall_s:.1f} s; ranks: {run.rank_nodes}; "
          f"results in {run.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
