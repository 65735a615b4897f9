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
