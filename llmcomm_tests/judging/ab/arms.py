"""One environment's side of an A/B comparison: a long-lived *arm server* started with the arm's
interpreter.

Why a server per interpreter: the launcher's fork server (runtime/launch.py) forks ranks from a process
that imported torch once, and it is started with ``sys.executable``.  Started inside a process
that runs the arm's interpreter, it imports *that* environment's torch (and framework), and each
later case of the session costs a fork, as in a plain run.  The server runs this checkout's
``llmcomm_tests`` (its folder goes first on ``PYTHONPATH``): the gate's code is the same in both
arms, only the stack under it differs.

A framework's engine (``framework: vllm | transformers``) runs through its adapter inside the arm, in
the arm's own interpreter: ``LLMCOMM_VLLM_PYTHON`` is set to it there, so a session-wide setting
cannot make both arms run one vLLM.  Before an arm runs a framework's first case it checks, in a
child of its interpreter, that torch and the framework import there (``Arm.prepare``): a pair of
environments that cannot run side by side fails the case at once with one line (the arm, its
python, why) instead of pair after pair.

Protocol: pickled frames over the server's original stdout (its ``print``s go to stderr, which the
client relays and keeps the tail of, to say why a server died).  A request is ``("env",)``,
``("check", framework, backend)``, ``("run", RunConfig, backend, timeout_s, available_ranks,
framework)`` or ``("quit",)``; a reply is ``("ok", plain JSON)`` or ``("error", text)``.  Runs come
back reduced to an :class:`~llmcomm_tests.judging.ab.observe.ArmRun` (volume rows and per-metric log
centres), so the reply is small and independent of the document format.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

from llmcomm_tests.core.documents import from_json, to_json
from llmcomm_tests.core.envinfo import Environment
from llmcomm_tests.frameworks.registry import adapter_for
from llmcomm_tests.frameworks.variables import VLLM_PYTHON_ENV
from llmcomm_tests.judging.ab.observe import ArmRun, observe
from llmcomm_tests.runtime import launch

QUIT_TIMEOUT_S = 60.0
STDERR_TAIL = 50  # lines of a server's stderr kept to say why it died
EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b")
CHECK_TIMEOUT_S = 600.0  # importing vLLM on a loaded 2-core host takes tens of seconds


@dataclass
class ArmEnv:
    """What an arm runs with: its server's environment, and what a rank forked by its launcher
    reports about itself (the proof that the ranks use this arm's environment)."""

    python: str  # as requested
    env: Environment | None = None  # the server's own; None where it never started
    rank_executable: str = ""
    rank_torch: str = ""
    rank_torch_file: str = ""
    framework: str = "ours"  # whose engine the arm runs in the comparison this environment heads

    @property
    def executable(self) -> str:
        return self.env.executable if self.env is not None else self.python

    def summary(self) -> dict[str, str]:
        return self.env.summary() if self.env is not None else {"python": f" ({self.python})"}


# The packages a framework's cases test, named first in the difference: the framework, then torch
# (under every framework, and the whole stack of ours).
UNDER_TEST = {"ours": ("torch",), "vllm": ("vllm", "torch"), "transformers": ("transformers", "torch")}


def under_test(framework: str) -> tuple[str, ...]:
    return UNDER_TEST.get(framework, (framework, "torch"))


def env_difference(a: ArmEnv, b: ArmEnv) -> str:
    """``vllm 0.31.0 → 0.32.0; torch 2.13.0+cpu (both); transformers 5.17.0 → 5.19.0; python 3.11.7
    (/a/bin/python) → …``: the packages under test first, named even where equal (a reader sees what
    was compared), then every other package that differs, the interpreter last; ``A/A: …`` when
    the arms are the same environment."""
    sa, sb = a.summary(), b.summary()
    lead = under_test(a.framework)

    def change(k: str) -> str:
        va, vb = sa.get(k) or "-", sb.get(k) or "-"
        return f"{k} {va} (both)" if va == vb else f"{k} {va} → {vb}"

    if sa == sb:
        return f"A/A: both arms {a.executable} ({', '.join(change(k).removesuffix(' (both)') for k in lead)})"
    rest = [k for k in sorted(set(sa) | set(sb)) if k not in lead and k != "python"] + ["python"]
    return "; ".join([change(k) for k in lead] + [change(k) for k in rest if sa.get(k) != sb.get(k)])


def versions(a: ArmEnv, b: ArmEnv) -> dict[str, dict[str, str | None]]:
    """Each arm's versions of the packages under test and of every package that differs, in the
    difference's order: what the JSON report keeps beside the one-line difference."""
    sa, sb = a.summary(), b.summary()
    lead = list(under_test(a.framework))
    rest = [k for k in sorted(set(sa) | set(sb)) if k not in lead and k != "python"] + ["python"]
    keys = lead + [k for k in rest if sa.get(k) != sb.get(k)]
    return {"framework": {"A": a.framework, "B": b.framework},
            **{k: {"A": sa.get(k), "B": sb.get(k)} for k in keys}}


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
        self._checked: set[str] = set()
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL)
        try:
            self.proc = subprocess.Popen([python, "-m", "llmcomm_tests.judging.ab.arms"], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                         start_new_session=True)
        except OSError as exc:
            raise ArmError(f"arm {name}: cannot start {python}: {exc}") from None
        self._relay = threading.Thread(target=self._relay_stderr, name=f"arm-{name}-stderr", daemon=True)
        self._relay.start()
        try:
            self.env = from_json(ArmEnv, self._call(("env",)))
        except ArmError as exc:
            self.close()
            why = str(exc).splitlines()[0]
            raise ArmError(why if why.startswith(f"arm {name} ") else f"arm {name} ({python}) cannot start: {why}") from None

    def prepare(self, framework: str, backend: str) -> None:
        """Run ``framework``'s engine from now on (``run``; the difference names it first), once a
        child of this arm's interpreter has imported torch and the framework: ArmError with one
        line naming the arm, its python and why where it cannot."""
        if framework not in self._checked:
            try:
                self._call(("check", framework, backend))
            except ArmError as exc:
                raise ArmError(f"arm {self.name} ({self.python}) cannot run {framework} cases: "
                               f"{str(exc).splitlines()[0]}{own_interpreter_hint(framework)}") from None
            self._checked.add(framework)
        self.env = dataclasses.replace(self.env, framework=framework)

    def run(self, cfg, backend: str, timeout_s: float, available_ranks: int | None):
        return from_json(ArmRun, self._call(("run", cfg, backend, timeout_s, available_ranks, self.env.framework)))

    def _relay_stderr(self) -> None:
        """The server's stderr goes on to this process's (fd 2, as if inherited); its last lines
        are kept to say why the server died."""
        for line in iter(self.proc.stderr.readline, b""):
            try:
                os.write(2, line)
            except OSError:
                pass
            self._stderr_tail.append(line.decode(errors="replace").rstrip())

    def why_died(self) -> str:
        """The server's last error line (a traceback's exception), else its last line."""
        self._relay.join(5)  # the pipe closes with the process: the tail is complete
        lines = [ln.strip() for ln in self._stderr_tail if ln.strip()]
        errors = [ln for ln in lines if EXCEPTION_LINE.match(ln)]
        return (errors or lines or ["no output on stderr"])[-1][:400]

    def _call(self, request):
        with self._lock:
            if self.proc.poll() is not None:
                raise ArmError(f"arm {self.name} ({self.python}) exited with code {self.proc.returncode}: "
                               f"{self.why_died()}")
            try:
                _write(self.proc.stdin, request)
                status, payload = _read(self.proc.stdout)
            except (EOFError, BrokenPipeError, OSError):
                try:
                    code = self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    code = None
                raise ArmError(f"arm {self.name} ({self.python}) died (exit code {code}): {self.why_died()}") from None
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
        self._relay.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
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


# Run in a child of the arm's interpreter: import torch, then the framework (a framework built
# against another torch fails here, naming the symbol); one line on stderr says what failed.
CHECK_PROBE = """
import importlib, json, sys
framework, backend = sys.argv[1], sys.argv[2]
found = {}
for name in ["torch"] + ([framework] if framework != "ours" else []):
    try:
        found[name] = str(getattr(importlib.import_module(name), "__version__", "?"))
    except BaseException as exc:
        torch = f" (with torch {found['torch']})" if "torch" in found else ""
        print(f"cannot import {name}{torch}: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        sys.exit(3)
if backend == "nccl":
    import torch
    if not torch.cuda.is_available():
        print(f"torch {torch.__version__} sees no CUDA device: this session runs nccl", file=sys.stderr)
        sys.exit(3)
print(json.dumps(found))
"""


def own_interpreter_hint(framework: str) -> str:
    if framework == "ours":
        return ""
    ignored = (f"; {VLLM_PYTHON_ENV} is not used under A/B" if framework == "vllm" and os.environ.get(VLLM_PYTHON_ENV)
               else "")
    return f" (each arm runs {framework} in its own interpreter: install it there{ignored})"


class Refused(RuntimeError):
    """One line: why this interpreter cannot run what was asked (the reply carries no traceback)."""


def framework_check(framework: str, backend: str) -> dict:
    """Server side of ``Arm.prepare``: the framework's adapter says it can run, and torch and the
    framework import in a child of this interpreter; ``Refused`` otherwise."""
    adapter = adapter_for(framework)
    done = subprocess.run([sys.executable, "-c", CHECK_PROBE, framework, backend], capture_output=True, text=True,
                          timeout=CHECK_TIMEOUT_S)
    if done.returncode != 0:
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        raise Refused(lines[-1] if lines else f"its check exited with code {done.returncode}")
    reason = adapter.missing()
    if reason:
        raise Refused(reason)
    return json.loads(done.stdout.splitlines()[-1])


def _environment(python: str) -> dict:
    from llmcomm_tests.judging.ab.arms import rank_probe as probe_entry

    try:
        probe = launch.launch(probe_entry, world_size=1, backend="gloo", timeout_s=120)[0]
    except launch.LaunchError:
        framework_check("ours", "gloo")  # says why in one line where torch cannot load here
        raise
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
            elif kind == "check":
                _, framework, backend = request
                reply = ("ok", framework_check(framework, backend))
            elif kind == "run":
                _, cfg, backend, timeout_s, available_ranks, framework = request
                doc = adapter_for(framework).run(cfg, backend=backend, timeout_s=timeout_s,
                                                 available_ranks=available_ranks)
                reply = ("ok", to_json(observe(doc)))
            else:
                reply = ("error", f"unknown request {kind!r}")
        except (Refused, ValueError, subprocess.TimeoutExpired) as exc:  # one line: nothing to trace
            reply = ("error", (str(exc) or type(exc).__name__).splitlines()[0])
        except Exception as exc:  # noqa: BLE001 - the client reports it as a failed arm
            first = str(exc) or type(exc).__name__
            reply = ("error", f"{type(exc).__name__}: {first}\n{traceback.format_exc(limit=-3)}")
        _write(out, reply)


def main() -> None:
    # The protocol owns the original stdout; anything printed goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # A framework's engine runs in this arm's interpreter, whatever the session set for it.
    os.environ[VLLM_PYTHON_ENV] = sys.executable
    try:
        serve(sys.stdin.buffer, out)
    except BrokenPipeError:  # the client went away mid-run: nothing left to tell it
        pass
    finally:
        from llmcomm_tests.runtime import launch

        launch.shutdown()  # before exiting: no process outlives the arm


if __name__ == "__main__":
    main()
