"""One environment's side of an A/B comparison: a long-lived *arm server* started with the arm's
interpreter.

Why a server per interpreter: the launcher's fork server (runtime/launch.py) forks ranks from a process
that imported torch once, and it is started with ``sys.executable``.  Started inside a process
that runs the arm's interpreter, it imports *that* environment's torch (and framework), and each
later case of the session costs a fork, as in a plain run.  The server runs this checkout's
``llmcomm_tests`` (its folder goes first on ``PYTHONPATH``): the gate's code is the same in both
arms, only the stack under it differs.

Protocol: pickled frames over the server's original stdout (its ``print``s go to stderr).  A
request is ``("env",)``, ``("run", RunConfig, backend, timeout_s, available_ranks)`` or
``("quit",)``; a reply is ``("ok", plain JSON)`` or ``("error", text)``.  Runs come back reduced
to an :class:`~llmcomm_tests.judging.ab.observe.ArmRun` (volume rows and per-metric log centres), so the
reply is small and independent of the document format.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

from llmcomm_tests.core.documents import from_json, to_json
from llmcomm_tests.core.envinfo import Environment
from llmcomm_tests.judging.ab.observe import ArmRun, observe
from llmcomm_tests.runtime import launch

QUIT_TIMEOUT_S = 60.0


@dataclass
class ArmEnv:
    """What an arm runs with: its server's environment, and what a rank forked by its launcher
    reports about itself (the proof that the ranks use this arm's environment)."""

    python: str  # as requested
    env: Environment | None = None  # the server's own; None where it never started
    rank_executable: str = ""
    rank_torch: str = ""
    rank_torch_file: str = ""

    @property
    def executable(self) -> str:
        return self.env.executable if self.env is not None else self.python

    def summary(self) -> dict[str, str]:
        return self.env.summary() if self.env is not None else {"python": f" ({self.python})"}


def env_difference(a: ArmEnv, b: ArmEnv) -> str:
    """``torch 2.13.0 → 2.14.1; numpy 2.4.6 → 2.3.5; python 3.11.7 (/usr/bin/python) → …``: the
    keys that differ, torch first; ``A/A: …`` when the arms are the same environment."""
    sa, sb = a.summary(), b.summary()
    keys = ["torch"] + [k for k in sorted(set(sa) | set(sb)) if k not in ("torch", "python")] + ["python"]
    diffs = [f"{k} {sa.get(k) or '-'} → {sb.get(k) or '-'}" for k in keys if sa.get(k) != sb.get(k)]
    if not diffs:
        return f"A/A: both arms {a.executable} (torch {sa.get('torch')})"
    return "; ".join(diffs)


# -- client side ----------------------------------------------------------------------------------


class ArmError(RuntimeError):
    pass


def package_root() -> str:
    """The folder holding this checkout's ``llmcomm_tests``."""
    return str(Path(__file__).resolve().parents[2])


class Arm:
    """A running arm server.  ``run`` is synchronous: the two arms never run at the same time."""

    def __init__(self, name: str, python: str, extra_env: dict[str, str] | None = None):
        self.name, self.python = name, python
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([package_root()] + [p for p in [env.get("PYTHONPATH")] if p])
        env.update(extra_env or {})
        self._lock = threading.Lock()
        try:
            self.proc = subprocess.Popen([python, "-m", "llmcomm_tests.judging.ab.arms"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, env=env, start_new_session=True)
        except OSError as exc:
            raise ArmError(f"arm {name}: cannot start {python}: {exc}") from None

        self.env = from_json(ArmEnv, self._call(("env",)))

    def run(self, cfg, backend: str, timeout_s: float, available_ranks: int | None):
        return from_json(ArmRun, self._call(("run", cfg, backend, timeout_s, available_ranks)))

    def _call(self, request):
        with self._lock:
            if self.proc.poll() is not None:
                raise ArmError(f"arm {self.name} ({self.python}) exited with code {self.proc.returncode}")
            try:
                _write(self.proc.stdin, request)
                status, payload = _read(self.proc.stdout)
            except (EOFError, BrokenPipeError, OSError) as exc:
                code = self.proc.poll()
                raise ArmError(f"arm {self.name} ({self.python}) died (exit code {code}): {exc!r}; "
                               f"its stderr is this session's stderr") from None
        if status != "ok":
            raise ArmError(payload)
        return payload

    def request_quit(self) -> None:
        if self.proc.poll() is None:
            try:
                _write(self.proc.stdin, ("quit",))
            except OSError:
                pass

    def close(self) -> None:
        """Quit and wait: the server stops its fork server first, which on a loaded host takes
        seconds (the fork server tears down torch)."""
        self.request_quit()
        try:
            self.proc.wait(QUIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass


def _write(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=4)  # protocol 4: readable by any Python >= 3.8
    stream.write(struct.pack(">Q", len(data)) + data)
    stream.flush()


def _read(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("arm server closed its pipe")
    (size,) = struct.unpack(">Q", head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("arm server closed its pipe mid-reply")
    return pickle.loads(data)


# -- server side ----------------------------------------------------------------------------------


def rank_probe(ctx) -> dict:
    """Runs on a rank: what interpreter and torch the rank itself has."""
    import torch

    return {"executable": sys.executable, "torch": str(torch.__version__), "torch_file": torch.__file__}


def _environment(python: str) -> dict:
    from llmcomm_tests.judging.ab.arms import rank_probe as probe_entry

    probe = launch.launch(probe_entry, world_size=1, backend="gloo", timeout_s=120)[0]
    return to_json(ArmEnv(python, Environment.capture(), probe["executable"], probe["torch"], probe["torch_file"]))


def serve(inp, out) -> None:

    while True:
        try:
            request = _read(inp)
        except EOFError:
            return
        kind = request[0]
        if kind == "quit":
            return
        try:
            if kind == "env":
                reply = ("ok", _environment(sys.executable))
            elif kind == "run":
                from llmcomm_tests.runtime.measure import run_engine

                _, cfg, backend, timeout_s, available_ranks = request
                doc = run_engine(cfg, backend=backend, timeout_s=timeout_s, available_ranks=available_ranks)
                reply = ("ok", to_json(observe(doc)))
            else:
                reply = ("error", f"unknown request {kind!r}")
        except Exception as exc:  # noqa: BLE001 - the client reports it as a failed arm
            first = str(exc) or type(exc).__name__
            reply = ("error", f"{type(exc).__name__}: {first}\n{traceback.format_exc(limit=-3)}")
        _write(out, reply)


def main() -> None:
    # The protocol owns the original stdout; anything printed goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    try:
        serve(sys.stdin.buffer, out)
    except BrokenPipeError:  # the client went away mid-run: nothing left to tell it
        pass
    finally:
        from llmcomm_tests.runtime import launch

        launch.shutdown()  # before exiting: no process outlives the arm


if __name__ == "__main__":
    main()
