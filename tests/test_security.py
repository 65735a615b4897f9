"""Safe to run as root on a shared runner (issue 21 A, docs/security.md): each attack below was
reproduced against the code before the fix, and here it is played again and must change nothing.

"Another user" is a forked child that drops to nobody (os.setuid) after opening the shared folder;
a sticky world-writable folder in tmp_path (mode 1777) stands in for /tmp; the cluster registry is
pointed at it with LLMCOMM_CLUSTER_REGISTRY, which is checked like the default place.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from llmcomm_tests.core.private_files import UnsafePath, check_private_dir, write_new
from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.runtime import netns, node_launch
from llmcomm_tests.runtime.measure import run_engine
from llmcomm_tests.runtime.run_config import RunConfig

ROOT = Path(__file__).resolve().parents[1]
NOBODY = 65534
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="plays root against another user: needs root")


def _ns_ok() -> tuple[bool, str]:
    try:
        return netns.can_create_namespaces()
    except Exception as exc:  # noqa: BLE001 - any failure means: skip with the reason
        return False, str(exc)


NS_OK, NS_WHY = _ns_ok() if os.geteuid() == 0 else (False, "not root")
needs_netns = pytest.mark.skipif(not NS_OK, reason=f"network namespaces unavailable: {NS_WHY}")


def _py(code: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmcomm_tests.commands", "cluster", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def _sticky_tmp(tmp_path: Path) -> Path:
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


def _as_other_user(folder: Path, act) -> None:
    """Run ``act(dir_fd)`` as nobody in a forked child, ``dir_fd`` an open descriptor of ``folder``
    (tmp_path's parents are closed to nobody; the shared folder itself is not)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.umask(0)
            act(fd)
            code = 0
        finally:
            os._exit(code)
    os.close(fd)
    assert os.waitpid(pid, 0)[1] == 0, "the other user's step failed"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _record(cluster_id: str, node_names: list[str], switch: str = "", subnet: int = 7) -> dict:
    return {"id": cluster_id, "ranks_per_node": 1, "inter_rate": None, "subnet": subnet,
            "nodes": [{"name": n, "addr": f"10.231.{subnet}.{i + 1}"} for i, n in enumerate(node_names)],
            "switch": switch, "owner_pid": _dead_pid(), "ifname": "llm0"}


@pytest.fixture
def victim_namespace():
    """A namespace that is not ours with a process inside (what a planted record names)."""
    name = f"h9victim-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    proc = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "300"], start_new_session=True)
    time.sleep(0.3)
    yield name, proc
    proc.kill()
    proc.wait()
    subprocess.run(["ip", "netns", "del", name], capture_output=True)


# -- 1. the cluster registry -----------------------------------------------------------------------


@as_root
@needs_netns
def test_registry_made_first_by_another_user_is_refused_and_nothing_is_reaped(tmp_path, victim_namespace):
    """Another user makes the registry in the shared temp folder first and plants a record whose
    owner is dead, naming a namespace that is not ours: `cluster up` (which reaps stale clusters)
    must refuse the folder, and the namespace and its process live on."""
    victim, proc = victim_namespace
    shared = _sticky_tmp(tmp_path)
    record = json.dumps(_record("abc", [victim]))

    def plant(fd):
        os.mkdir("llmcomm-clusters", 0o777, dir_fd=fd)
        reg = os.open("llmcomm-clusters", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        with os.fdopen(os.open("abc.json", os.O_WRONLY | os.O_CREAT, 0o666, dir_fd=reg), "w") as f:
            f.write(record)

    _as_other_user(shared, plant)
    registry = shared / "llmcomm-clusters"
    assert registry.stat().st_uid == NOBODY
    up = _cli("up", "--nodes", "1", "--ranks-per-node", "1", "--inter-rate", "none",
              env={"LLMCOMM_CLUSTER_REGISTRY": str(registry)})
    assert up.returncode == 2, (up.stdout, up.stderr)
    assert "refused" in up.stderr and f"owned by uid {NOBODY}" in up.stderr
    assert len(up.stderr.strip().splitlines()) == 1, up.stderr
    assert proc.poll() is None and victim in netns.existing_namespaces()


@as_root
@pytest.mark.parametrize("kind", ["loose mode", "symlink"])
def test_registry_with_a_loose_mode_or_through_a_symlink_is_refused(tmp_path, kind):
    target = tmp_path / "real"
    target.mkdir(mode=0o700)
    if kind == "loose mode":
        target.chmod(0o755)
        registry, words = target, "mode 0755"
    else:
        registry, words = tmp_path / "link", "symlink"
        registry.symlink_to(target)
    status = _cli("status", env={"LLMCOMM_CLUSTER_REGISTRY": str(registry)})
    assert status.returncode == 2 and "refused" in status.stderr and words in status.stderr, status.stderr


@as_root
@needs_netns
def test_planted_records_in_a_private_registry_touch_nothing_that_is_not_ours(tmp_path, victim_namespace):
    """Even in the registry's own folder a record is checked before use: a record naming a foreign
    namespace, or an id with a parent-folder step, is dropped; nothing is killed, deleted or unlinked."""
    victim, proc = victim_namespace
    registry = tmp_path / "reg"
    registry.mkdir(mode=0o700)
    canary = tmp_path / "canary.json"  # what an id climbing out of the registry unlinked
    canary.write_text("root's file")
    (registry / "abc.json").write_text(json.dumps(_record("abc", ["llmc-abc-n0"], switch=victim)))
    (registry / "def.json").write_text(json.dumps(_record(str(Path("..") / "canary"), ["llmc-def-n0"], subnet=8)))
    done = _py("from llmcomm_tests.runtime import netns\nprint(netns.reap_stale())",
               {"LLMCOMM_CLUSTER_REGISTRY": str(registry)})
    assert done.returncode == 0, done.stderr
    assert proc.poll() is None and victim in netns.existing_namespaces()
    assert canary.read_text() == "root's file"
    assert not list(registry.glob("*.json"))  # refused records are dropped, not acted on


def test_a_node_name_with_extra_words_is_refused_before_any_command(tmp_path):
    """``cluster calibrate`` built ``ip netns exec {node}`` from a record's node name and split it:
    extra words ran as a command.  The record is refused, and the template keeps a value one word."""
    registry = tmp_path / "reg"
    registry.mkdir(mode=0o700)
    (registry / "abc.json").write_text(json.dumps(_record("abc", [f"llmc-abc-n0 touch {tmp_path}/ran"])))
    load = _py("from llmcomm_tests.runtime import netns\nnetns.load_cluster('abc')",
               {"LLMCOMM_CLUSTER_REGISTRY": str(registry)})
    assert load.returncode != 0 and "registry record refused" in load.stderr, load.stderr
    launch = node_launch.NodeLaunch("ip netns exec {node}", (node_launch.NodeTarget("n0 sh -c id", "10.0.0.1"),), 1)
    with pytest.raises(ValueError, match="bad node name"):
        node_launch.node_command(launch, 0, 1234, "id", tmp_path, "m:f", [])


def test_registry_files_are_created_never_followed(tmp_path, monkeypatch):
    """A ``<id>.tmp`` symlink made ``cluster rate`` overwrite the file it pointed to."""
    registry = tmp_path / "reg"
    registry.mkdir(mode=0o700)
    canary = tmp_path / "root-only"
    canary.write_text("secret")
    monkeypatch.setenv("LLMCOMM_CLUSTER_REGISTRY", str(registry))
    monkeypatch.setattr(netns, "REGISTRY", registry, raising=False)  # where the code before the fix looked
    for name in ("abc.tmp", f"abc.{os.getpid()}.tmp"):
        (registry / name).symlink_to(canary)
    cluster = netns.Cluster.from_dict(_record("abc", ["llmc-abc-n0"]))
    netns._save(cluster)
    assert canary.read_text() == "secret"
    assert json.loads((registry / "abc.json").read_text())["id"] == "abc"
    with pytest.raises(FileExistsError):
        write_new(registry / "abc.tmp", "x")  # the helper every such file goes through


def test_private_dir_check_refuses_what_another_user_could_change(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o700)
    loose.chmod(0o1777)
    with pytest.raises(UnsafePath, match="mode 1777"):
        check_private_dir(loose)
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(UnsafePath, match="symlink"):
        check_private_dir(link)
    assert check_private_dir(tmp_path / "fresh").stat().st_mode & 0o777 == 0o700


# -- 2. a spec is data -----------------------------------------------------------------------------

SPEC = """\
name: two-node
engine: {preset: tiny, n_layers: 2}
workload: {batch: 1, prompt_len: 8, gen_len: 3}
layouts: ["2x2"]
topology:
  nodes: 2
  ranks_per_node: 2
"""


@pytest.mark.parametrize("line, flag", [
    ("  node_cmd: 'sh -c ''touch {out}/ran; exec \"$@\"'' sh'\n", "--llmcomm-node-cmd"),
    ("  hosts: ['-oProxyCommand=touch {out}/ran', b]\n", "--llmcomm-hosts"),
    ("  results_dir: /etc\n", "--llmcomm-results-dir"),
])
def test_a_spec_that_names_a_command_host_or_folder_is_refused_where_it_says_so(tmp_path, line, flag):
    from llmcomm_tests.spec import SpecError, load_spec

    path = tmp_path / "evil.yaml"
    path.write_text(SPEC + line.format(out=tmp_path))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert info.value.line == 8 and message.startswith(f"{path}:8: topology.") and "\n" not in message
    assert "a spec is data" in message and flag in message
    assert not (tmp_path / "ran").exists()


# -- 3. remote commands ----------------------------------------------------------------------------


def _ssh_stand_in(tmp_path: Path) -> Path:
    """An ``ssh`` that does what sshd does with its command: join the words with blanks and hand
    the string to the remote user's shell."""
    ssh = tmp_path / "bin" / "ssh"
    ssh.parent.mkdir()
    ssh.write_text('#!/bin/sh\nshift  # the host\nexec sh -c "$*"\n')
    ssh.chmod(0o755)
    return ssh


def test_host_values_are_one_argument_and_never_an_option(tmp_path):
    launch = node_launch.NodeLaunch("ssh {host}", (node_launch.NodeTarget("n0", "10.0.0.1", "-oProxyCommand=id"),), 1)
    with pytest.raises(ValueError, match="bad host"):
        node_launch.node_command(launch, 0, 1234, "id", tmp_path, "m:f", [])
    srun = node_launch.NodeLaunch("srun --nodelist={host} --overlap", (node_launch.NodeTarget("n0", "a", "gpu-1"),), 1)
    words = node_launch.node_command(srun, 0, 1234, "id", tmp_path, "m:f", ['{"a": "b c"}'])
    assert words[:3] == ["srun", "--nodelist=gpu-1", "--overlap"] and words[-1] == '{"a": "b c"}'
    ssh = node_launch.NodeLaunch("ssh -p 22 {host}", (node_launch.NodeTarget("n0", "a", "gpu-1"),), 1)
    words = node_launch.node_command(ssh, 0, 1234, "id", tmp_path, "m:f", ['{"a": "b c"}'])
    assert words[:4] == ["ssh", "-p", "22", "gpu-1"] and len(words) == 5  # the remote command: one string
    assert shlex.split(words[4])[-1] == '{"a": "b c"}'


def test_ssh_template_runs_json_arguments_and_no_engine_name(tmp_path):
    """Through an ssh stand-in (a shell on the far side, as sshd gives): the engine's JSON arrives
    whole, the case runs, and an engine name with ``$(…)`` runs nothing."""
    ssh = _ssh_stand_in(tmp_path)
    marker = tmp_path / "ran"
    shape = replace(PRESETS["tiny"], name=f"x$(touch {marker})`touch {marker}`")
    nodes = tuple(node_launch.NodeTarget(f"local{i}", "127.0.0.1", "localhost", env={"GLOO_SOCKET_IFNAME": "lo"})
                  for i in range(2))
    launch = node_launch.NodeLaunch(f"{shlex.quote(str(ssh))} {{host}}", nodes, 1, 120.0)
    doc = run_engine(RunConfig(shape, Layout(2, 1), batch=1, prompt_len=8, gen_len=3, repeats=1, warmup=0),
                     nodes=launch, timeout_s=120)
    assert doc.case.engine["name"] == shape.name and len(doc.tokens[0]) == 3
    assert not marker.exists()


# -- 4. the results folder -------------------------------------------------------------------------

RANK_TARGETS = "import time\n\ndef hang(argv):\n    time.sleep(600)\n\ndef done(argv):\n    return 0\n"


def _local_launch(tmp_path: Path, nodes: int, timeout_s: float, results_dir: Path | None = None):
    (tmp_path / "h9_rank_targets.py").write_text(RANK_TARGETS)
    launch = node_launch.local_nodes(nodes, 1, timeout_s)
    return replace(launch, env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT}"},
                   results_dir=str(results_dir) if results_dir else None)


def test_a_planted_start_record_gets_no_signal_to_its_pid(tmp_path):
    """On a timeout the launcher signalled (SIGUSR1, then SIGKILL) every pid a start record in the
    shared folder named.  A record planted there names a process of someone else's: it lives on."""
    shared = tmp_path / "shared"
    shared.mkdir()
    victim = subprocess.Popen(["sleep", "300"], start_new_session=True)
    planted = {}

    def plant():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not list(shared.glob("llmcomm-nodes-*")):
            time.sleep(0.05)
        for folder in shared.glob("llmcomm-nodes-*"):
            record = {"rank": 9, "local_rank": 0, "group_rank": 0, "node": "local1", "host": socket.gethostname(),
                      "pid": victim.pid}
            (folder / "rank9.start.json").write_text(json.dumps(record))
            planted["at"] = folder

    planter = threading.Thread(target=plant, daemon=True)
    planter.start()
    try:
        with pytest.raises(node_launch.NodeRankTimeout) as info:
            node_launch.run_on_nodes(_local_launch(tmp_path, 2, 15.0, shared), "h9_rank_targets:hang", [])
        planter.join(5)
        assert "at" in planted
        assert victim.poll() is None, "the launcher signalled a pid read from a file"
        assert "rank(s) [9] not on this host or not running" in str(info.value)
    finally:
        victim.kill()
        victim.wait()


def test_an_existing_or_symlinked_results_folder_is_not_used(tmp_path):
    """A results folder prepared by someone else (a symlink to a folder holding a ``node0.log``
    symlink): it was chmodded 0755 and the log written through the link.  Now it is refused."""
    target = tmp_path / "root-only"
    target.mkdir(mode=0o700)
    canary = tmp_path / "canary"
    canary.write_text("secret")
    (target / "node0.log").symlink_to(canary)
    link = tmp_path / "results"
    link.symlink_to(target)
    with pytest.raises(FileExistsError):
        node_launch.run_on_nodes(_local_launch(tmp_path, 1, 60.0), "h9_rank_targets:done", [], results=link)
    assert canary.read_text() == "secret" and target.stat().st_mode & 0o777 == 0o700


def test_each_launch_gets_a_fresh_private_folder_inside_the_given_one(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    run = node_launch.run_on_nodes(_local_launch(tmp_path, 1, 60.0, shared), "h9_rank_targets:done", [],
                                   keep_results=True)
    assert run.results.parent == shared and run.results.stat().st_mode & 0o777 == 0o700
    assert run.rank_nodes == {0: "local0"}


# -- 5. the rendezvous store -----------------------------------------------------------------------


def _listening(port: int) -> list[str]:
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                out.append(local.rsplit(":", 1)[0])
    return out


def test_the_rendezvous_store_listens_everywhere_and_the_docs_say_so():
    """torch's TCPStore (torchrun's c10d rendezvous host) binds every address whatever host it is
    given, and torchrun offers no bind address: docs/cluster.md must say the store is
    unauthenticated and belongs on a private network.  Should torch learn to bind, this fails."""
    import datetime

    import torch.distributed as dist

    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=5))
    addrs = _listening(store.port)
    assert addrs and all(set(a) == {"0"} for a in addrs), addrs  # 0.0.0.0 or [::]
    cluster_doc = (ROOT / "docs" / "cluster.md").read_text()
    assert "unauthenticated" in cluster_doc and "private network" in cluster_doc


# -- report files are written through no planted symlink ---------------------------------------------


def test_report_files_are_never_written_through_a_planted_symlink(tmp_path):
    """A trace's temporary file and the item log are opened with O_EXCL / O_NOFOLLOW: a symlink
    planted where they go (``traces/.<name>.tmp``, ``llmcomm-items.jsonl``) leaves its target alone."""
    from llmcomm_tests.core.documents import CaseResult, Prediction, Verdict
    from llmcomm_tests.report import json_report
    from llmcomm_tests.report.trace import write_trace

    victim = tmp_path / "root-only.txt"
    victim.write_text("precious")
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / ".case.json.tmp").symlink_to(victim)
    doc = run_engine(RunConfig(PRESETS["tiny"], Layout(1, 1), prompt_len=4, gen_len=2, repeats=1, warmup=0,
                               keep_records=True))
    write_trace(doc, traces / "case.json")
    assert victim.read_text() == "precious"
    assert json.loads((traces / "case.json").read_text())["traceEvents"]

    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / json_report.ITEMS_FILENAME).symlink_to(victim)
    result = CaseResult("spec", "spec.yaml", "case", "cpu-loopback", "gloo", {}, Prediction([]), Verdict("case"))
    with pytest.raises(json_report.ReportFileError, match="cannot append"):
        json_report.append_item(reports, result, "s1")
    assert victim.read_text() == "precious"
