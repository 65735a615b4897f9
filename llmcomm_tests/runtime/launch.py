"""Ranks up and down: start W ranks on this host, collect each rank's result, leave nothing behind.

Why a fork server: a spawned rank spends seconds importing torch, and a plain fork of a parent that
already ran torch ops can hang (docs/measurements.md#launching-ranks).  Python's ``forkserver``
start method, with torch preloaded, forks each rank from a clean process that imported torch but
never ran an op: the first launch of a session pays the import once, later launches cost a fork.
Each rank calls ``torch.set_num_threads`` before any op (the fork-safety rule).

Rendezvous is a FileStore in a fresh temporary directory per launch (inside multiprocessing's
``pymp-*`` folder, so that no stop leaves it behind): no ports to pick, so concurrent launches
cannot collide.  Results come back over one pipe per rank.  On a timeout every
unfinished rank dumps its Python stacks (faulthandler on SIGUSR1) before all ranks are killed; a
rank that raises sends its traceback.  Ranks also exit by themselves if the launcher disappears.
Each rank leads its own process group, killed as a whole (a rank's own children go with it), and
is killed even when the fork server died under it (multiprocessing then no longer knows it).

Multi-node runs use torchrun instead (``python -m torch.distributed.run ... -m llmcomm_tests.runtime.torchrun_entry``),
with the same rank-side code.
"""

from __future__ import annotations

import contextlib
import faulthandler
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing import forkserver
from pathlib import Path
from typing import Any, Callable

from llmcomm_tests.core.envinfo import cuda_device_count
from llmcomm_tests.runtime.procfs import all_processes, proc_stat, running

PRELOAD = ["llmcomm_tests.runtime.preload"]
STACK_GRACE_S = 5.0  # at most this long for hung ranks to write their stacks (read as soon as they have)
FAILURE_GRACE_S = 1.0  # after one rank fails, how long to wait for the others' own errors
STOP_GRACE_S = 30.0  # the fork server tears torch down as it exits: seconds on a loaded host
LOG_TAIL_BYTES = 64 * 1024  # of a rank's log, what a failure report reads (a rank may log gigabytes)
FORK_SERVER_LOST = 255  # multiprocessing's exit code for a rank whose fork server can no longer tell it


# Errors a rank sees when another rank died under it (gloo's wording): symptoms, not causes.
PEER_LOST_MARKERS = ("Connection reset by peer", "Connection closed by peer", "connectFullMesh failed")


class LaunchError(RuntimeError):
    """A launch that did not bring back a result from every rank."""

    def __init__(self, message: str, ranks: list[int]):
        super().__init__(message)
        self.ranks = ranks


class RankFailed(LaunchError):
    pass


class RankTimeout(LaunchError):
    pass


@dataclass(frozen=True)
class RankContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: str  # "cpu" or "cuda:N"
    # A gloo group of every rank for host-side messages (clock ping-pong, gathered results) where the
    # default group is NCCL, which refuses CPU tensors; None where the default group is gloo already.
    host_group: Any = None


def resolve_backend(backend: str, world_size: int, share_gpu: bool | None = None) -> str:
    """``auto``: NCCL with one GPU per rank where there are enough CUDA devices, else gloo.  Ranks
    sharing one GPU (``sharing_gpu``) need one device in all."""
    devices = cuda_device_count()  # torch.cuda.is_available() would call cudaGetDeviceCount here
    needed = 1 if sharing_gpu(share_gpu) else world_size
    if backend == "nccl" and devices < needed:
        raise ValueError(f"backend nccl needs one CUDA device per rank: {world_size} ranks, {devices} devices"
                         if needed > 1 else "backend nccl needs a CUDA device: none here")
    if backend != "auto":
        return backend
    return "nccl" if devices >= needed else "gloo"


# Several ranks on one GPU, for function only (time-sliced: never for timing).  NCCL refuses two
# ranks on one device ("Duplicate GPU detected") unless each rank claims its own host, and ranks on
# "other hosts" then talk over the socket transport on loopback (docs/measurements.md#ranks-sharing-one-gpu).
SHARE_GPU_ENV = "LLMCOMM_SHARE_GPU"
SHARED_GPU_NCCL = {"NCCL_NET": "Socket", "NCCL_SOCKET_IFNAME": "lo", "NCCL_IB_DISABLE": "1",
                   "NCCL_P2P_DISABLE": "1", "NCCL_SHM_DISABLE": "1"}


def sharing_gpu(share_gpu: bool | None = None) -> bool:
    """Whether ranks share one GPU: ``share_gpu`` where given, else ``LLMCOMM_SHARE_GPU=1``."""
    return os.environ.get(SHARE_GPU_ENV) == "1" if share_gpu is None else share_gpu


def shared_gpu_env(rank: int) -> dict[str, str]:
    """The NCCL settings of rank ``rank`` on a shared GPU (inert on gloo)."""
    return {**SHARED_GPU_NCCL, "NCCL_HOSTID": f"llmcomm-rank{rank}"}


_context = None
_running: list = []  # rank processes of the launches in progress in this process


def _mp_context():
    global _context
    if _context is None:
        # The fork server learns the launcher's temporary folder, to remove it if the launcher is
        # killed (runtime/preload.py)
        from multiprocessing import util

        os.environ["LLMCOMM_LAUNCHER_TEMPDIR"] = util.get_temp_dir()
        multiprocessing.set_forkserver_preload(PRELOAD)
        _context = multiprocessing.get_context("forkserver")
    return _context


def shutdown() -> None:
    """Kill the ranks of any launch in progress and stop the fork server; the next launch starts a
    new one.  Does nothing where none was started.  A process that exits without calling it leaves
    nothing either: each rank exits once its launcher is gone, and the fork server once it and
    every rank are gone."""
    _reap(list(_running))
    stop_fork_server()


def stop_fork_server() -> None:
    """Stop the fork server and wait for it, at most ``STOP_GRACE_S`` before killing it.

    Its children go first: each holds the server's "alive" pipe, and the server ends only when every
    holder has closed it; a rank forked a moment ago is not in ``_running`` yet."""
    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    lock, stop = getattr(server, "_lock", None), getattr(server, "_stop_unlocked", None)
    if pid is None or lock is None or stop is None:
        return
    for child in _children_of(pid):
        _kill(child)
    # The interrupted thread may hold the lock (a signal arrived while it started the server): that
    # server then ends with this process.
    if not lock.acquire(timeout=5):
        return
    _say_stopping()
    deadline = threading.Timer(STOP_GRACE_S, _kill, (pid,))
    deadline.start()
    try:
        stop()
    finally:
        deadline.cancel()
        _say_stopping(False)  # a later server, of a later launch, is not being stopped
        lock.release()


def _say_stopping(stopping: bool = True) -> None:
    """Tell the fork server that this launcher stops it and removes its temporary folder itself
    (runtime/preload.py removes it only for a launcher that died)."""
    folder = os.environ.get("LLMCOMM_LAUNCHER_TEMPDIR")
    if folder:
        flag = Path(folder, ".llmcomm-stopping")
        with contextlib.suppress(OSError):
            flag.touch() if stopping else flag.unlink()


def fork_server_pid() -> int | None:
    server = getattr(forkserver, "_forkserver", None)
    return getattr(server, "_forkserver_pid", None)


def _start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid``: tells a rank from a later process that reuses its pid."""
    st = proc_stat(pid)
    return st.start_time if st is not None else None


def _children_of(pid: int) -> list[int]:
    return [child for child, st in all_processes().items() if st.ppid == pid]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def _main_module_hidden():
    """Keep multiprocessing from re-running the parent's __main__ in every rank: ranks need only
    importable entry points, and re-running a user's script (or pytest's) costs time and surprises."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__.pop(k) for k in ("__file__",) if k in main.__dict__}
    spec, main.__spec__ = getattr(main, "__spec__", None), None
    try:
        yield
    finally:
        main.__dict__.update(saved)
        main.__spec__ = spec


def launch(entry: Callable[..., Any], args: tuple = (), *, world_size: int, backend: str = "auto",
           timeout_s: float = 300.0, threads_per_rank: int = 1, env: dict[str, str] | None = None,
           share_gpu: bool | None = None) -> list[Any]:
    """Run ``entry(RankContext, *args)`` on ``world_size`` ranks; return their results in rank order.

    ``entry`` must be importable (module-level).  Raises RankFailed or RankTimeout naming the ranks.
    ``share_gpu`` (None: ``LLMCOMM_SHARE_GPU=1``): every rank on device 0 with its own NCCL host
    id (``shared_gpu_env``; ``env`` given here still wins), for function only.
    """
    if getattr(entry, "__module__", "__main__") == "__main__" or "<locals>" in getattr(entry, "__qualname__", ""):
        raise ValueError(f"launch entry {entry!r} must be a module-level function of an importable module")
    shared = sharing_gpu(share_gpu)
    backend = resolve_backend(backend, world_size, shared)
    ctx = _mp_context()
    # Inside multiprocessing's own temporary folder: removed at exit even when a second Ctrl-C cut
    # this launch's cleanup short, and by the fork server when the launcher was killed (preload.py).
    from multiprocessing import util

    workdir = Path(tempfile.mkdtemp(prefix="llmcomm-launch-", dir=util.get_temp_dir()))
    rendezvous = f"file://{workdir / 'store'}"
    procs, readers = [], {}
    try:
        for rank in range(world_size):
            reader, writer = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_rank_main, name=f"llmcomm-rank{rank}", daemon=True,
                args=(entry, args, rank, world_size, backend, rendezvous, threads_per_rank, timeout_s,
                      writer, os.getpid(), str(workdir),
                      {**(shared_gpu_env(rank) if shared else {}), **(env or {})}, 0 if shared else rank),
            )
            with _main_module_hidden():
                proc.start()
            proc.llmcomm_started = _start_time(proc.pid)  # the rank's own process group is its pid
            writer.close()
            procs.append(proc)
            _running.append(proc)
            readers[reader] = rank
        return _collect(procs, readers, workdir, timeout_s)
    finally:
        _reap(procs)
        for proc in procs:
            _running.remove(proc)
        shutil.rmtree(workdir, ignore_errors=True)


def _collect(procs, readers, workdir: Path, timeout_s: float) -> list[Any]:
    results: dict[int, Any] = {}
    errors: dict[int, str] = {}
    deadline = time.monotonic() + timeout_s
    first_error_at = None
    sentinels = {p.sentinel: rank for rank, p in enumerate(procs)}
    while len(results) + len(errors) < len(procs):
        now = time.monotonic()
        if first_error_at is not None and now - first_error_at > FAILURE_GRACE_S:
            break
        if now >= deadline:
            raise _timeout(procs, results, errors, workdir, timeout_s)
        wait_for = list(readers) + [s for s, r in sentinels.items() if r not in results and r not in errors]
        for ready in multiprocessing.connection.wait(wait_for, timeout=min(0.5, deadline - now)):
            if ready in readers:
                rank = readers.pop(ready)
                try:
                    status, payload = ready.recv()
                except EOFError:
                    continue  # died before sending; its sentinel reports it
                (results if status == "ok" else errors)[rank] = payload
            else:
                rank = sentinels[ready]
                if rank not in results and rank not in errors and not _drain(readers, rank, results, errors):
                    procs[rank].join(0.1)  # the sentinel fired: reap it so exitcode is set
                    if procs[rank].exitcode == FORK_SERVER_LOST and not running(fork_server_pid()):
                        raise _fork_server_lost(procs, results, errors)
                    errors[rank] = f"rank {rank} exited with code {procs[rank].exitcode} before sending a result" \
                                   + _log_tail(workdir, rank)
            if errors and first_error_at is None:
                first_error_at = time.monotonic()
    if errors:
        # Name the root cause: a rank that raised on its own, not one whose peer vanished under it.
        first = min(errors, key=lambda r: (any(m in errors[r] for m in PEER_LOST_MARKERS), r))
        others = f" (also failed: ranks {sorted(set(errors) - {first})})" if len(errors) > 1 else ""
        raise RankFailed(f"rank {first} failed{others}:\n{errors[first]}", sorted(errors))
    return [results[r] for r in range(len(procs))]


def _fork_server_lost(procs, results, errors) -> LaunchError:
    """The fork server died: its ranks' exit codes are unknown (multiprocessing says 255 for all),
    and they may still run.  Say so; ``_reap`` kills them by their process groups."""
    running = [r for r, p in enumerate(procs) if r not in results and r not in errors and _group_alive(p)]
    state = f"ranks {running} were still running and are killed" if running else "no rank was still running"
    return LaunchError(f"the fork server (pid {fork_server_pid()}) that started the ranks died during the launch; "
                       f"{state}", sorted(set(range(len(procs))) - set(results)))


def _group_alive(proc) -> bool:
    return running(proc.pid) and _start_time(proc.pid) == getattr(proc, "llmcomm_started", None)


def _drain(readers, rank, results, errors) -> bool:
    """A rank may exit right after sending: read its pipe before calling it dead."""
    for conn, r in list(readers.items()):
        if r == rank and conn.poll(0.2):
            try:
                status, payload = conn.recv()
            except EOFError:
                return False
            readers.pop(conn)
            (results if status == "ok" else errors)[rank] = payload
            return True
    return False


def _timeout(procs, results, errors, workdir: Path, timeout_s: float) -> RankTimeout:
    hung = [r for r, p in enumerate(procs) if r not in results and r not in errors and p.is_alive()]
    for rank in hung:
        try:
            os.kill(procs[rank].pid, signal.SIGUSR1)
        except ProcessLookupError:
            pass
    stacks = _await_stacks(workdir, hung)
    waiting = [r for r in hung if _in_communication(stacks[r])]
    stuck = [r for r in hung if r not in waiting]
    if stuck and waiting:
        verdict = f"rank(s) {stuck} stuck outside communication, {waiting} waiting in a collective for them"
    elif waiting:
        verdict = (f"ranks {waiting} all wait in communication: a deadlock, or ops that do not match across "
                   f"ranks (order, peer, group)")
    else:
        verdict = f"ranks {hung} still running outside communication"
    where = "; ".join(f"rank {r} {_where(stacks[r])}" for r in hung)
    text = "\n".join(f"--- rank {r} stacks ---\n{stacks[r]}" for r in hung)
    # The first line alone (a verdict row, a JUnit message) still says where each rank is.
    return RankTimeout(f"timed out after {timeout_s:g} s; {verdict}; {where}\n{text}", stuck or hung)


_HARNESS = ("/torch/", "/multiprocessing/", "/threading.py", "llmcomm_tests/runtime/recorder.py", "llmcomm_tests/runtime/faults.py",
            "llmcomm_tests/runtime/launch.py", "<string>")


def _where(stacks: str) -> str:
    """``in recv from _recv_boundary (engine/parallel.py:141)``: the innermost torch.distributed
    call of the main thread, and the innermost frame of the code that made it."""
    frames = [ln.strip() for ln in stacks.split("Current thread", 1)[-1].splitlines()
              if ln.strip().startswith("File ")]
    if not frames:
        return "(no stacks)"
    parsed = []
    for ln in frames:  # File "/path/x.py", line 12 in func
        try:
            path, rest = ln[len('File "'):].split('", line ', 1)
            lineno, func = rest.split(" in ", 1)
        except ValueError:
            continue
        parsed.append((path, lineno, func))
    op = next((f for p, _, f in parsed if "torch/distributed" in p and f not in ("wrapper",)), None) \
        or _device_wait(frames[0])
    mine = next(((p, n, f) for p, n, f in parsed if not any(h in p for h in _HARNESS)), None)
    if mine is None:
        return f"in {op}" if op else f"in {parsed[0][2]}" if parsed else "(no stacks)"
    path, lineno, func = mine
    short = "/".join(path.split("/")[-2:])
    return (f"in {op} from {func} ({short}:{lineno})" if op else f"in {func} ({short}:{lineno})")


def _await_stacks(workdir: Path, ranks: list[int]) -> dict[int, str]:
    """Each hung rank's faulthandler dump, read once it is written: the ranks may be descheduled
    (2 busy cores), so poll until every file has stopped growing, up to STACK_GRACE_S."""
    deadline = time.monotonic() + STACK_GRACE_S
    sizes: dict[int, int] = {}
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = {r: _size(workdir / f"stacks{r}.txt") for r in ranks}
        if all(now[r] > 0 and now[r] == sizes.get(r) for r in ranks):
            break
        sizes = now
    out = {}
    for r in ranks:
        text = _read(workdir / f"stacks{r}.txt")
        if not text or text == "(no stacks written)":
            text = (f"(no Python stacks within {STACK_GRACE_S:g} s of SIGUSR1: the rank was still starting, or "
                    f"is stuck where signals wait)" + _log_tail(workdir, r))
        out[r] = text
    return out


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# Where the host blocks on a GPU: a NCCL collective is asynchronous, so a rank waiting for a late
# peer sits in a stream/device/event synchronize or a ``Work.wait``, not inside torch.distributed.
def _device_wait(frame: str) -> str | None:
    """``cuda synchronize`` for a frame of torch.cuda that blocks the host on the device (device,
    stream or event synchronize), else None."""
    return "cuda synchronize" if "torch/cuda/" in frame and frame.endswith(" in synchronize") else None


def _in_communication(stacks: str) -> bool:
    """Whether a rank's main thread (faulthandler's "Current thread" block, innermost frame first)
    is blocked in torch.distributed, in the recorder's ``Work.wait`` or (NCCL) in a CUDA
    synchronize: waiting for a peer, not the peer that hangs."""
    main = stacks.split("Current thread", 1)[-1].splitlines()
    frames = [ln.strip() for ln in main if ln.strip().startswith("File ")]
    if not frames:
        return False
    innermost = frames[0]
    in_recorder_wait = (("llmcomm_tests/runtime/recorder.py" in innermost or "llmcomm_tests/runtime/faults.py" in innermost)
                        and innermost.endswith(" in wait"))
    return "torch/distributed" in innermost or in_recorder_wait or _device_wait(innermost) is not None


def _reap(procs) -> None:
    """Kill each rank's process group (the rank and whatever it started), whether or not
    multiprocessing still knows the rank's state (it does not once the fork server is gone)."""
    for proc in procs:
        if proc.pid is None:
            continue
        # The group outlives its leader while a child of the rank lives, and its number is not
        # reused meanwhile; a pid now running another process (another start time) is not ours.
        now = _start_time(proc.pid)
        if getattr(proc, "llmcomm_started", None) is not None and now in (None, proc.llmcomm_started):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if proc.is_alive():
            proc.kill()
    for proc in procs:
        proc.join(5)


def _read(path: Path, limit: int = LOG_TAIL_BYTES) -> str:
    """The last ``limit`` bytes of a file (a rank may have written gigabytes to it)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read(limit)
    except OSError:
        return "(no stacks written)"
    text = data.decode(errors="replace")
    if size > limit:  # the first line is cut: say how much went before it
        text = f"[... {size - limit} bytes before ...]" + text.split("\n", 1)[-1]
    return text.strip()


def _log_tail(workdir: Path, rank: int, lines: int = 20) -> str:
    text = _read(workdir / f"rank{rank}.log")
    return "\n" + "\n".join(text.splitlines()[-lines:]) if text else ""


# -- rank side -------------------------------------------------------------------------------------


def _rank_main(entry, args, rank, world_size, backend, rendezvous, threads, timeout_s, conn, launcher_pid,
               workdir, env, local_rank):
    # First of all: a SIGUSR1 that arrives before the handler would kill the rank without a word.
    stacks = open(os.path.join(workdir, f"stacks{rank}.txt"), "w")
    faulthandler.register(signal.SIGUSR1, file=stacks, all_threads=True)
    os.setpgid(0, 0)  # its own process group: the launcher kills the rank and whatever it started as one
    import torch

    torch.set_num_threads(threads)  # before any torch op: a forked rank can hang otherwise
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the launcher, which kills us
    log = open(os.path.join(workdir, f"rank{rank}.log"), "w")
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    os.environ.update(env)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    threading.Thread(target=_watch_launcher, args=(launcher_pid,), daemon=True).start()
    try:
        ctx = init_rank(rank, world_size, local_rank, backend, rendezvous, timeout_s)
        result = entry(ctx, *args)
        conn.send(("ok", result))
    except BaseException:  # noqa: BLE001 - every failure must reach the launcher
        conn.send(("error", f"rank {rank}: {_shorten(traceback.format_exc())}"))
    finally:
        teardown_rank()
        conn.close()


def _shorten(text: str, keep: int = 40) -> str:
    """A recursion traceback runs to thousands of lines; keep its head and its tail."""
    lines = text.splitlines()
    if len(lines) <= 2 * keep:
        return text
    return "\n".join(lines[:keep] + [f"    ... {len(lines) - 2 * keep} lines omitted ..."] + lines[-keep:])


def _watch_launcher(pid: int) -> None:
    while True:
        time.sleep(0.5)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(3)


def init_rank(rank: int, world_size: int, local_rank: int, backend: str, rendezvous: str | None,
              timeout_s: float) -> RankContext:
    """Join the process group (rendezvous None → env://, as under torchrun)."""
    import torch
    import torch.distributed as dist

    device, bound, host_group = "cpu", {}, None
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
        bound = {"device_id": torch.device(device)}  # NCCL binds its communicator to this GPU at once
    if world_size > 1 or rendezvous is None:
        # The group's own timeout sits past the launcher's so the launcher reports the hang first.
        timeout = timedelta(seconds=timeout_s + 60)
        dist.init_process_group(backend, init_method=rendezvous or "env://", rank=rank, world_size=world_size,
                                timeout=timeout, **bound)
        if backend == "nccl":
            host_group = dist.new_group(backend="gloo", timeout=timeout)
    return RankContext(rank, world_size, local_rank, backend, device, host_group)


def teardown_rank() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def exit_rank(code: int) -> None:
    """End a torchrun-started rank without interpreter finalization, as multiprocessing ends ours.

    Gloo's threads can still hold tensors when the interpreter tears down, and about one exit in
    twenty then aborts ("terminate called without an active exception", SIGABRT) after the work and
    its documents are done; torchrun reports that as a failed rank
    (docs/measurements.md#launching-ranks)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
