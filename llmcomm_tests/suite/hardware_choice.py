"""Which hardware profile a run is judged against, and why — never a silent guess.

Order: ``--llmcomm-hardware`` (a preset name or YAML path) → the spec's ``hardware:`` (see
``LLMCommSession.profile_for``) → this machine's own: ``cpu-loopback`` on gloo, or on NCCL the
shipped preset whose ``devices`` names the detected GPU model and whose ``ranks_per_node`` is the
number of GPUs on this node.  A CUDA machine no preset describes fails the session: a profile
that does not describe the machine would make every latency row and budget "n/a", and n/a never
fails.  No torch here (the plugin loads without it): devices are read from the driver's files.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from llmcomm_tests.analytic.hardware import load_profile, match_preset
from llmcomm_tests.core import envinfo
from llmcomm_tests.suite import options

CPU_HARDWARE = "cpu-loopback"


class NoHardwareProfile(ValueError):
    """A CUDA machine that no profile describes."""


@dataclass(frozen=True)
class ProfileChoice:
    profile: object  # analytic.hardware.HardwareProfile
    name: str  # what budgets' ``hardware`` is matched against
    how: str  # shown in the header and the report: "--llmcomm-hardware", "detected ...", ...
    anchor: object = None  # core.documents.HostAnchor: this host probed against the profile's (session.anchored)


def no_profile_message(device: str, count: int) -> str:
    return f"no hardware profile for {device} × {count}: pass --llmcomm-hardware or run llmcomm calibrate"


def machine_profile(option: str | None, backend: str) -> ProfileChoice:
    if option:
        profile = load_profile(option)
        return ProfileChoice(profile, profile.name, f"--llmcomm-hardware {option}")
    if backend != "nccl":
        return ProfileChoice(load_profile(CPU_HARDWARE), CPU_HARDWARE, "gloo ranks on CPU")
    models = envinfo.gpu_models()
    # The node's size is its GPUs, not the ones CUDA_VISIBLE_DEVICES leaves this run: a preset
    # describes a whole node (which ranks share NVLink).
    count = len(models) or options.cuda_device_count()
    kinds = Counter(models)
    if len(kinds) != 1:  # no model readable, or a node of mixed GPUs: no preset describes it
        device = " + ".join(kinds) if kinds else "an unnamed CUDA device"
        raise NoHardwareProfile(no_profile_message(device, count))
    device = models[0]
    profile = match_preset(device, count)
    if profile is None:
        raise NoHardwareProfile(no_profile_message(device, count))
    return ProfileChoice(profile, profile.name, f"detected {device} × {count}")
