"""Environment facts shared by the rank side (run documents) and the plugin side (fingerprints).
No torch import: the plugin must load without it."""

from __future__ import annotations

import os

COMM_VARIABLE_PREFIXES = ("NCCL_", "GLOO_", "TORCH_NCCL_")


def comm_variables() -> dict[str, str]:
    """The NCCL_* / GLOO_* / TORCH_NCCL_* variables: they change what is measured."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith(COMM_VARIABLE_PREFIXES)}


def nvidia_driver() -> str | None:
    try:
        with open("/proc/driver/nvidia/version") as f:
            return f.readline().strip()
    except OSError:
        return None


def gpu_models() -> list[str]:
    """One model name per NVIDIA device, read from the driver's /proc files (no torch, no CUDA init)."""
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
