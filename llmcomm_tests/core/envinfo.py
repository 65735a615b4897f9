"""Environment facts shared by the rank side (run documents) and the plugin side (fingerprints).
Importing this module imports no torch: the plugin must load without it."""

from __future__ import annotations

import os
import subprocess
import sys

# Variables that change what is measured: the collective libraries' own (NCCL, gloo, torch's NCCL
# wrapper), the transports NCCL may run over (UCX, libfabric for EFA/Slingshot), which devices a rank
# sees, and how many hardware queues CUDA gives concurrent streams.
COMM_VARIABLE_PREFIXES = ("NCCL_", "GLOO_", "TORCH_NCCL_", "UCX_", "FI_")
COMM_VARIABLES = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_MAX_CONNECTIONS", "CUDA_DEVICE_ORDER")
NCCL_SYSTEM_CONFIG = "/etc/nccl.conf"


def comm_variables() -> dict[str, str]:
    """The environment variables above that are set, sorted by name."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(COMM_VARIABLE_PREFIXES) or k in COMM_VARIABLES}


def nccl_config_files() -> dict[str, str]:
    """path -> contents of the configuration files NCCL reads at init: ``NCCL_CONF_FILE`` (NCCL >=
    2.23) or else ``~/.nccl.conf``, and ``/etc/nccl.conf`` (NCCL's "Environment Variables" page).  A
    setting there changes NCCL as much as the variable would, but leaves the environment untouched."""
    user = os.environ.get("NCCL_CONF_FILE") or os.path.join(os.path.expanduser("~"), ".nccl.conf")
    files = {}
    for path in (user, NCCL_SYSTEM_CONFIG):
        try:
            with open(path) as f:
                files[path] = f.read()
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
    import ctypes.util

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
    import glob

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
