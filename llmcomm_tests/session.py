"""What one pytest session of llmcomm cases shares: resolved options, ranks, hardware, results.

Per-case results reach the session through the test reports (``report.llmcomm``), so that with
pytest-xdist the controller, which runs no case itself, still sees every result.
"""

from __future__ import annotations

import os
import platform
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata

import pytest

from .documents import CaseResult
from .envinfo import comm_variables, gpu_models, nccl_config_files, nvidia_driver
from .options import LLMCommOptions, available_ranks, cuda_device_count
from .spec import SpecNames

CPU_HARDWARE = "cpu-loopback"
SESSION_ID_ENV = "LLMCOMM_SESSION_ID"


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def fingerprint() -> dict:
    """The environment a baseline or report is tied to — without importing torch."""
    from . import __version__

    nccl = next((package_version(p) for p in ("nvidia-nccl-cu13", "nvidia-nccl-cu12", "nvidia-nccl-cu11")
                 if package_version(p)), None)
    return {
        "llmcomm_tests": __version__,
        "torch": package_version("torch"),
        "nccl": nccl,
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cuda_devices": cuda_device_count(),
        "gpu_models": gpu_models(),
        "driver": nvidia_driver(),
        "variables": comm_variables(),
        "nccl_config": nccl_config_files(),
    }


@dataclass
class LLMCommSession:
    """Reached from a pytest config as ``config.stash[SESSION_KEY]``."""

    options: LLMCommOptions
    ranks: int = 0
    ranks_reason: str = ""
    results: list[CaseResult] = field(default_factory=list)
    env: dict = field(default_factory=dict)
    session_id: str = ""  # tells baseline runs of one session from runs of another
    spec_names: SpecNames = field(default_factory=SpecNames)  # unique across the session's files

    def __post_init__(self):
        self.ranks, self.ranks_reason = available_ranks(self.options)
        self.env = fingerprint()
        # xdist workers inherit the controller's environment: one id for the whole session
        if not (os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(SESSION_ID_ENV)):
            os.environ[SESSION_ID_ENV] = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
        self.session_id = os.environ[SESSION_ID_ENV]

    @property
    def backend(self) -> str:
        if self.options.backend != "auto":
            return self.options.backend
        # One GPU per rank, as the launcher does: fewer devices than ranks means CPU ranks on gloo.
        return "nccl" if 0 < self.ranks <= cuda_device_count() else "gloo"

    @property
    def hardware_option(self) -> str:
        """The profile (preset name or YAML path) this machine is measured against."""
        if self.options.hardware:
            return self.options.hardware
        return CPU_HARDWARE if self.backend == "gloo" else "unknown-gpu"

    @property
    def hardware(self) -> str:
        """The name budgets are matched against: the profile's own name (a YAML path's ``name``)."""
        profile = self.profile()
        return profile.name if profile is not None else self.hardware_option

    def profile(self):
        """The hardware profile, or None (latency bounds are then reported as not applicable)."""
        if not hasattr(self, "_profile"):
            from .analytic.hardware import load_profile

            try:
                self._profile = load_profile(self.hardware_option)
            except ValueError:
                if self.options.hardware:  # asked for by name: a typo must not skip checks quietly
                    raise
                self._profile = None
        return self._profile

    def header(self) -> list[str]:
        e = self.env
        devices = ", ".join(f"{n}x {m}" for m, n in Counter(e["gpu_models"]).items()) or "no CUDA devices"
        lines = [f"llmcomm-tests {e['llmcomm_tests']}: torch {e['torch']}, backend {self.backend}, "
                 f"NCCL {e['nccl'] or '-'}, devices: {devices}, hardware profile {self.hardware} "
                 f"({self.hardware_option})",
                 f"llmcomm ranks: {self.ranks} ({self.ranks_reason}); reports -> {self.options.report_dir}/"]
        if self.options.inject:
            lines.append(f"llmcomm PLANTED FAULTS: {', '.join(self.options.inject)} (gate self-test)")
        return lines


SESSION_KEY = pytest.StashKey[LLMCommSession]()
