"""What one pytest session of llmcomm cases shares: resolved options, ranks, hardware, results.

Per-case results reach the session through the test reports (``report.llmcomm``), so that with
pytest-xdist the controller, which runs no case itself, still sees every result.
"""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import pytest

from llmcomm_tests.core.documents import CaseResult, SessionReport
from llmcomm_tests.core.envinfo import Environment
from llmcomm_tests.judging.levels import SessionLevels, divide
from llmcomm_tests.runtime import launch, netns, node_launch
from llmcomm_tests.spec import SpecNames
from llmcomm_tests.spec.topology import for_session
from llmcomm_tests.suite.hardware_choice import NoHardwareProfile, ProfileChoice, machine_profile
from llmcomm_tests.suite.options import LLMCommOptions, available_ranks, cuda_device_count
from llmcomm_tests.suite.resources import SessionResources

__all__ = ["LLMCommSession", "NoHardwareProfile", "ProfileChoice"]
SESSION_ID_ENV = "LLMCOMM_SESSION_ID"


@dataclass
class LLMCommSession:
    """Reached from a pytest config as ``config.stash[SESSION_KEY]``."""

    options: LLMCommOptions
    ranks: int = 0
    ranks_reason: str = ""
    results: list[CaseResult] = field(default_factory=list)
    environment: Environment | None = None  # captured at the start, without importing torch
    session_id: str = ""  # tells baseline runs of one session from runs of another
    spec_names: SpecNames = field(default_factory=SpecNames)  # unique across the session's files
    timed_cases: int = 1  # cases that will run with latency rows: their tests share one 5 % (judging/checks.py)
    judged_cases: int = 1  # cases that will run here: stored-baseline and A/B rows share theirs over these
    resources: SessionResources = field(default_factory=SessionResources)  # closed by ``close``

    def __post_init__(self):
        self.resources.callback(launch.shutdown)  # the fork server and ranks of this process's launches
        self.ranks, self.ranks_reason = available_ranks(self.options)
        if self.environment is None:
            self.environment = Environment.capture()
        # xdist workers inherit the controller's environment: one id for the whole session
        if not (os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get(SESSION_ID_ENV)):
            os.environ[SESSION_ID_ENV] = f"{socket.gethostname()}-{os.getpid()}-{time.time_ns()}"
        self.session_id = os.environ[SESSION_ID_ENV]

    @property
    def env(self) -> dict:
        """The environment as reports and baselines store it."""
        return self.environment.fingerprint()

    @property
    def levels(self) -> SessionLevels:
        """How the session's one family-wise false-alarm rate is divided among its timed checks
        and cases (judging/levels.py)."""
        return divide(ab=bool(self.options.ab), baseline_compare=bool(self.options.baseline_compare),
                      timed_cases=self.timed_cases, judged_cases=self.judged_cases)

    @property
    def backend(self) -> str:
        if self.options.backend != "auto":
            return self.options.backend
        # One GPU per rank, as the launcher does: fewer devices than ranks means CPU ranks on gloo.
        return "nccl" if 0 < self.ranks <= cuda_device_count() else "gloo"

    # -- hardware profiles: the machine's own, and each case's --------------------------------------

    def machine_profile(self) -> "ProfileChoice":
        """This machine's profile, as a case without its own ``hardware:`` gets it: the
        --llmcomm-hardware option, else cpu-loopback on gloo, else the preset for the detected
        device model × devices per node.  Raises ValueError (a bad option) or NoHardwareProfile."""
        if not hasattr(self, "_machine"):
            self._machine = machine_profile(self.options.hardware, self.backend)
        return self._machine

    def profile_for(self, case) -> "ProfileChoice":
        """The profile a case is judged against, its name (what budgets match) and how it was
        chosen: --llmcomm-hardware overrides everything (and says so), else the spec's
        ``hardware:``, else the machine's own.  Raises ValueError naming the spec for an unknown
        name, NoHardwareProfile where the machine has none."""
        given = getattr(case, "hardware_given", False)
        if self.options.hardware or not given:
            choice = self.machine_profile()
            if given and case.hardware != choice.name:
                choice = replace(choice, how=f"{choice.how}, overriding the spec's hardware: {case.hardware}")
            return choice
        cache = self.__dict__.setdefault("_spec_profiles", {})
        if case.hardware not in cache:
            from llmcomm_tests.analytic.hardware import load_profile

            try:
                profile = load_profile(case.hardware)
            except ValueError as exc:
                raise ValueError(f"{case.path}: hardware: {exc}") from None
            cache[case.hardware] = ProfileChoice(profile, profile.name, f"hardware: of {case.path.name}")
        return cache[case.hardware]

    def anchored(self, choice: "ProfileChoice") -> "ProfileChoice":
        """``choice`` with this host's anchor probe (``calibration/anchor.py``), run once per profile
        per session; unchanged with ``--llmcomm-anchor off``, on NCCL, or for a profile without an
        anchor."""
        profile = choice.profile
        if self.options.anchor == "off" or self.backend != "gloo" or getattr(profile, "anchor", None) is None:
            return choice
        cache = self.__dict__.setdefault("_anchors", {})
        if profile.name not in cache:
            from llmcomm_tests.calibration import anchor
            from llmcomm_tests.core.documents import HostAnchor

            try:
                cache[profile.name] = anchor.measure(profile, self.backend, timeout_s=self.options.timeout)
            except Exception as exc:  # a probe that cannot run: the profile as calibrated, and say why
                cache[profile.name] = HostAnchor(profile.name, {}, {}, {}, 0.0, "", error=str(exc).splitlines()[0])
        return replace(choice, anchor=cache[profile.name])

    def reprobed(self, choice: "ProfileChoice", after: str):
        """The anchor probe re-run now, to confirm the failed latency rows of case ``after``
        (``calibration/anchor.py``); a probe that cannot run says why, and the failures stand."""
        from llmcomm_tests.calibration import anchor
        from llmcomm_tests.core.documents import HostAnchor

        try:
            return anchor.measure(choice.profile, self.backend, timeout_s=self.options.timeout, after=after)
        except Exception as exc:
            return HostAnchor(choice.profile.name, {}, {}, {}, 0.0, "", error=str(exc).splitlines()[0], after=after)

    # -- nodes: a spec's topology, or the session's; emulated clusters live as long as the session ---

    def topology_for(self, spec):
        """The topology a spec's cases run on: its own ``topology:``, else the one the options give
        (``--llmcomm-emulate-nodes`` / ``--llmcomm-node-cmd``); ``--llmcomm-inter-rate`` replaces
        the rates of any emulated one."""
        o = self.options
        widest = max(layout.world_size for layout in spec.layouts)
        return for_session(spec.topology, widest, o.emulate_nodes, o.ranks_per_node, o.inter_rate, o.node_cmd,
                           o.hosts, o.results_dir)

    def node_launch_for(self, case):
        """How a case with a topology starts its ranks (a ``NodeLaunch``), or None (fork them here).
        An emulated cluster is brought up at its first case and kept for the session's others."""
        t = case.topology
        if t is None:
            return None
        if not t.emulate:
            if not t.node_cmd:  # one node without a command: this host, ranks forked here
                return None
            nodes = tuple(node_launch.NodeTarget(h, h, h) for h in t.hosts)
            return node_launch.NodeLaunch(t.node_cmd, nodes, t.ranks_per_node, results_dir=t.results_dir)
        key = (t.nodes, t.ranks_per_node, case.inter_rate)
        clusters = self.__dict__.setdefault("_clusters", {})
        if key not in clusters:
            clusters[key] = netns.up_owned(*key)
            self.resources.callback(netns.release, clusters[key])
        return node_launch.emulated_nodes(clusters[key])

    def close(self) -> None:
        """Close everything this process started for the session (arm servers, emulated clusters,
        the fork server and its ranks)."""
        self.resources.close()

    @property
    def hardware_option(self) -> str:
        """How the machine's profile was chosen (for the header and the report)."""
        try:
            return self.machine_profile().how
        except ValueError as exc:
            return str(exc)

    @property
    def hardware(self) -> str:
        """The machine profile's name (what budgets are matched against when a spec names none)."""
        try:
            return self.machine_profile().name
        except ValueError:
            return "none"

    def profile(self):
        """The machine's hardware profile (the per-case one is ``profile_for(case).profile``)."""
        return self.machine_profile().profile

    def session_report(self, complete: bool = True, exitstatus=None, selected: int | None = None) -> SessionReport:
        """The session's cases and what they ran with, as the JSON, HTML and JUnit reports take it."""
        return SessionReport(self.env, self.backend, self.hardware, self.ranks,
                             {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(self.options).items()},
                             list(self.results), complete, None if exitstatus is None else int(exitstatus),
                             session_id=self.session_id, selected=selected)

    def header(self) -> list[str]:
        e = self.environment
        devices = ", ".join(f"{n}x {m}" for m, n in Counter(e.gpu_models).items()) or "no CUDA devices"
        lines = [f"llmcomm-tests {e.llmcomm_tests}: torch {e.packages.get('torch')}, backend {self.backend}, "
                 f"NCCL {e.nccl_package or '-'}, devices: {devices}, hardware profile {self.hardware} "
                 f"({self.hardware_option})" + (", overriding every spec's hardware:" if self.options.hardware else
                                                "; a spec's hardware: applies to its cases"),
                 f"llmcomm ranks: {self.ranks} ({self.ranks_reason}); reports -> {self.options.report_dir}/"]
        if self.options.ab:
            import sys

            lines.append(f"llmcomm A/B gate: arm A {sys.executable}, arm B {self.options.ab}; seeded AB/BA pairs "
                         f"(seed {self.options.ab_seed}), up to {self.options.ab_pairs} per case")
        if self.options.inject:
            where = "arm B only" if self.options.ab else "gate self-test"
            lines.append(f"llmcomm PLANTED FAULTS: {', '.join(self.options.inject)} ({where})")
        return lines


SESSION_KEY = pytest.StashKey[LLMCommSession]()
