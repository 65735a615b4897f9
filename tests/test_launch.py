"""The launcher: results back, failures named, nothing left behind."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

import rank_entries
from interrupt import default_sigint
from llmcomm_tests.runtime.launch import RankFailed, RankTimeout, launch


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture
def baseline_processes():
    launch(rank_entries.echo, world_size=2, timeout_s=60)  # the fork server exists from here on
    return descendants()


def test_results_come_back_in_rank_order():
    results = launch(rank_entries.echo, ("hello",), world_size=4, timeout_s=60)
    assert [r["rank"] for r in results] == [0, 1, 2, 3]
    assert all(r["sum"] == 6.0 and r["payload"] == "hello" for r in results)  # 0+1+2+3: a real all-reduce
    assert len({r["pid"] for r in results}) == 4


def test_crashing_rank_is_named_with_its_traceback(baseline_processes):
    t0 = time.monotonic()
    with pytest.raises(RankFailed) as info:
        launch(rank_entries.crash, (1,), world_size=2, timeout_s=30)
    assert time.monotonic() - t0 < 30 + 5
    message = str(info.value)
    assert message.startswith("rank 1 failed")
    assert "planted crash on rank 1" in message and "Traceback" in message
    assert descendants() == baseline_processes


def test_rank_that_dies_silently_is_named(baseline_processes):
    with pytest.raises(RankFailed, match=r"rank 1 failed[\s\S]*exited with code 7"):
        launch(rank_entries.die, (1,), world_size=2, timeout_s=30)
    assert descendants() == baseline_processes


def test_hanging_rank_times_out_with_stacks(baseline_processes):
    timeout = 3
    t0 = time.monotonic()
    with pytest.raises(RankTimeout) as info:
        launch(rank_entries.hang, (1,), world_size=2, timeout_s=timeout)
    assert time.monotonic() - t0 < timeout + 5
    message = str(info.value)
    assert info.value.ranks == [1]  # the one stuck outside communication, not its waiting peer
    assert "rank(s) [1] stuck outside communication, [0] waiting in a collective for them" in message
    assert "--- rank 1 stacks ---" in message and "in hang" in message and "rank_entries.py" in message
    assert descendants() == baseline_processes


def test_concurrent_launches_do_not_collide():
    results, errors = [], []

    def one():
        try:
            results.append(launch(rank_entries.echo, world_size=2, timeout_s=60))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 3
    assert all(r[0]["sum"] == 1.0 for r in results)


def test_entry_must_be_importable():
    def local(ctx):
        return ctx.rank

    with pytest.raises(ValueError, match="module-level function"):
        launch(local, world_size=1)


def _run_script(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            preexec_fn=default_sigint)


def _wait_for_pids(pid_dir: Path, n: int, timeout: float = 120) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = list(pid_dir.glob("rank*.pid"))
        if len(files) == n and all(f.read_text() for f in files):
            return [int(f.read_text()) for f in files]
        time.sleep(0.1)
    raise AssertionError("ranks did not start")


def _gone(pids: list[int], timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids):
            return True
        time.sleep(0.1)
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_no_rank_outlives_an_interrupted_or_killed_launcher(tmp_path, sig):
    code = (f"from llmcomm_tests.runtime.launch import launch\nimport rank_entries\n"
            f"launch(rank_entries.hang, (1, 3600, {str(tmp_path)!r}), world_size=2, timeout_s=600)\n")
    proc = _run_script(code)
    pids = []
    try:
        pids = _wait_for_pids(tmp_path, 2)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert _gone(pids), f"ranks {pids} still alive after the launcher got {sig!r}"
    finally:  # a failure here must not leave a hung launcher and its ranks behind
        if proc.poll() is None:
            proc.kill()
        for p in pids:
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(p).kill()
        proc.wait()


def test_stopping_the_fork_server_kills_a_rank_no_launch_has_registered():
    """Every child of the fork server holds its "alive" pipe: one the launcher does not know of yet
    (forked a moment before a signal) would keep the server, and whoever waits for it, up forever."""
    code = ("import time\nfrom llmcomm_tests.runtime import launch\n"
            "proc = launch._mp_context().Process(target=time.sleep, args=(3600,), daemon=True)\n"
            "proc.start()\nstart = time.monotonic()\nlaunch.stop_fork_server()\n"
            "print(proc.pid, time.monotonic() - start, flush=True)\n")
    proc = _run_script(code)
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pid, waited = out.decode().split()[-2:]
    assert _gone([int(pid)]), out.decode()
    from llmcomm_tests.runtime.launch import STOP_GRACE_S

    assert float(waited) < STOP_GRACE_S / 2, out.decode()  # the server ended by itself, not at the deadline


# -- ranks sharing one GPU (function only): each its own NCCL host id, all on device 0 -------------

SHARED_NCCL = {"NCCL_NET": "Socket", "NCCL_SOCKET_IFNAME": "lo", "NCCL_IB_DISABLE": "1", "NCCL_P2P_DISABLE": "1",
               "NCCL_SHM_DISABLE": "1"}


def _placements(monkeypatch, share_env: str | None = None, **kwargs):
    monkeypatch.delenv("LLMCOMM_SHARE_GPU", raising=False)
    if share_env is not None:
        monkeypatch.setenv("LLMCOMM_SHARE_GPU", share_env)
    return launch(rank_entries.gpu_placement, backend="gloo", timeout_s=60, **kwargs)


def test_ranks_sharing_one_gpu_get_their_own_nccl_host_and_device_0(monkeypatch):
    seen = _placements(monkeypatch, world_size=4, share_gpu=True, env={"EXTRA": "1"})
    for rank, placed in enumerate(seen):
        assert placed["env"] == {**SHARED_NCCL, "NCCL_HOSTID": f"llmcomm-rank{rank}", "EXTRA": "1"}
        assert placed["bound"] == [0] and placed["device"] == "cuda:0" and placed["device_id"] == "cuda:0"


def test_llmcomm_share_gpu_1_shares_as_the_parameter_does(monkeypatch):
    seen = _placements(monkeypatch, "1", world_size=2)
    assert [p["env"]["NCCL_HOSTID"] for p in seen] == ["llmcomm-rank0", "llmcomm-rank1"]
    assert [p["bound"] for p in seen] == [[0], [0]]


def test_ranks_not_sharing_bind_their_own_gpu_and_get_no_nccl_settings(monkeypatch):
    for seen in (_placements(monkeypatch, world_size=2), _placements(monkeypatch, "1", world_size=2, share_gpu=False)):
        assert [p["bound"] for p in seen] == [[0], [1]]
        assert [p["device"] for p in seen] == ["cuda:0", "cuda:1"]
        assert all(not set(p["env"]) & {"NCCL_HOSTID", *SHARED_NCCL} for p in seen)


def test_nccl_ranks_sharing_one_gpu_need_one_device_not_one_each(monkeypatch):
    from llmcomm_tests.runtime import launch as launch_mod

    monkeypatch.delenv("LLMCOMM_SHARE_GPU", raising=False)
    monkeypatch.setattr(launch_mod, "cuda_device_count", lambda: 1)
    assert launch_mod.resolve_backend("nccl", 4, share_gpu=True) == "nccl"
    assert launch_mod.resolve_backend("auto", 4, share_gpu=True) == "nccl"
    assert launch_mod.resolve_backend("auto", 4) == "gloo"
    with pytest.raises(ValueError, match="one CUDA device per rank: 4 ranks, 1 devices"):
        launch_mod.resolve_backend("nccl", 4)
    monkeypatch.setattr(launch_mod, "cuda_device_count", lambda: 0)
    with pytest.raises(ValueError, match="needs a CUDA device: none here"):
        launch_mod.resolve_backend("nccl", 2, share_gpu=True)
    assert launch_mod.resolve_backend("auto", 2, share_gpu=True) == "gloo"
