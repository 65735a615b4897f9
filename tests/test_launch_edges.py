"""The launchers own their whole tree: a dead fork server is said and its ranks killed, a rank's own
children go with it, a rank's huge log is read from its tail; torchrun nodes keep their logs in the
results folder, die with their launcher and a killed agent is named."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import psutil
import pytest

import rank_entries
from llmcomm_tests.runtime import launch as launcher
from llmcomm_tests.runtime.launch import LaunchError, RankFailed, launch
from llmcomm_tests.runtime.node_launch import NodeRankFailed, local_nodes, run_on_nodes

TESTS = str(Path(__file__).parent)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _gone(pids, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.1)
    return False


def _pids(folder: Path, pattern: str, n: int, timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = sorted(folder.glob(pattern))
        if len(files) == n and all(f.read_text().strip() for f in files):
            return [int(f.read_text()) for f in files]
        time.sleep(0.1)
    raise AssertionError(f"{n} x {pattern} did not appear in {folder}")


def _kill_all(pids) -> None:
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()


def test_a_dead_fork_server_is_said_and_its_ranks_are_killed(tmp_path):
    """Both ranks alive (rank 1 sleeps, rank 0 waits for it) when the fork server is SIGKILLed:
    multiprocessing calls both "exited with code 255"; the launch must say the server died and
    leave no rank running."""
    def kill_server():
        _pids(tmp_path, "rank*.pid", 2)
        from multiprocessing import forkserver

        os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_server, daemon=True)
    killer.start()
    try:
        with pytest.raises(LaunchError, match="fork server") as info:
            launch(rank_entries.hang, (1, 3600, str(tmp_path)), world_size=2, timeout_s=120)
        assert "exited with code 255" not in str(info.value)
        assert _gone(_pids(tmp_path, "rank*.pid", 2)), "ranks outlived their dead fork server"
    finally:
        _kill_all(_pids(tmp_path, "rank*.pid", 2))
    assert launch(rank_entries.echo, world_size=2, timeout_s=120)[1]["sum"] == 1.0  # a new server serves


def test_a_ranks_own_children_are_killed_with_it(tmp_path):
    with pytest.raises(RankFailed, match="planted failure"):
        launch(rank_entries.with_child, (str(tmp_path),), world_size=2, timeout_s=120)
    children = _pids(tmp_path, "child*.pid", 2)
    try:
        assert _gone(children), "a rank's child process outlived the launch"
    finally:
        _kill_all(children)


def test_a_rank_log_is_read_from_its_tail(tmp_path):
    """A rank that logged 64 MiB: the failure report reads its last lines, not the whole file."""
    log = tmp_path / "rank0.log"
    with open(log, "wb") as f:
        f.truncate(64 << 20)
        f.seek(0, os.SEEK_END)
        f.write(b"\nthe last words\n")
    tracemalloc.start()
    try:
        tail = launcher._log_tail(tmp_path, 0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert tail.strip().endswith("the last words")
    assert peak < 4 << 20, f"read {peak} bytes to show a log's tail"


# -- torchrun nodes (local template: plain processes on loopback) ---------------------------------


def _nodes(tmp: Path, n: int = 2):
    nodes = local_nodes(n, 1, timeout_s=120)
    env = {"PYTHONPATH": os.pathsep.join([launcher.__file__.rsplit("/llmcomm_tests/", 1)[0], TESTS]),
           "TMPDIR": str(tmp)}
    return nodes.__class__(**{**nodes.__dict__, "env": env})


def test_node_launches_leave_no_torchelastic_folder(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run = run_on_nodes(_nodes(tmp), "rank_entries:quick_target", [], collect=())
    assert sorted(run.rank_nodes) == [0, 1]
    assert not list(tmp.glob("torchelastic_*")), sorted(p.name for p in tmp.iterdir())


def test_a_killed_launcher_takes_its_agents_and_ranks_with_it(tmp_path):
    results = tmp_path / "results"
    code = ("import sys\nfrom pathlib import Path\nsys.path.insert(0, %r)\nimport test_launch_edges as t\n"
            "from llmcomm_tests.runtime.node_launch import run_on_nodes\n"
            "run_on_nodes(t._nodes(Path(%r)), 'rank_entries:sleep_target', [], results=Path(%r))\n"
            % (TESTS, str(tmp_path), str(results)))
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    ranks = []
    try:
        ranks = _start_pids(results, 2)
        agents = [p.pid for p in psutil.Process(proc.pid).children()]
        proc.kill()
        proc.wait()
        assert _gone(agents + ranks, timeout=30), "torchrun agents or ranks outlived their launcher"
    finally:
        if proc.poll() is None:
            proc.kill()
        _kill_all(ranks)


def _start_pids(results: Path, n: int, timeout: float = 120) -> list[int]:
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        starts = []
        for path in results.glob("rank*.start.json"):
            with contextlib.suppress(ValueError):
                starts.append(json.loads(path.read_text())["pid"])
        if len(starts) == n:
            return starts
        time.sleep(0.1)
    raise AssertionError(f"{n} ranks did not start in {results}")


def test_a_killed_torchrun_agent_is_named(tmp_path):
    results = tmp_path / "results"
    failure = []

    def run():
        try:
            run_on_nodes(_nodes(tmp_path), "rank_entries:sleep_target", [], results=results)
        except NodeRankFailed as exc:
            failure.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    ranks = _start_pids(results, 2)
    agent = next(p for p in psutil.Process().children()
                 if "--node-name" in p.cmdline() and p.cmdline()[p.cmdline().index("--node-name") + 1] == "local1")
    agent.kill()
    thread.join(120)
    _kill_all(ranks)
    assert failure, "the launch did not fail"
    text = str(failure[0])
    assert "torchrun agent of node local1 was killed by signal 9" in text, text
    assert "before any rank reported" not in text
