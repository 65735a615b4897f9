"""Whose engine runs a case (``framework: ours | vllm | transformers``): one adapter per framework,
registered under its name, so no caller branches on the name.

Every adapter takes the same :class:`~llmcomm_tests.runtime.run_config.RunConfig` and returns the
same run document (``llmcomm.run/1``: tokens, per-token times, metrics, op records in our schema),
so the volume model, timing checks and reports do not care which engine ran.  An adapter whose
framework is not installed says so with the install command (``missing``), and the case is skipped
with that reason.  No torch import here: the pytest plugin side calls ``missing``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from llmcomm_tests.core.documents import RunDocument
    from llmcomm_tests.runtime.node_launch import NodeLaunch
    from llmcomm_tests.runtime.run_config import RunConfig


class FrameworkAdapter(Protocol):
    name: str
    # Its collectives are torch.distributed calls, what a hardware profile calibrates: the latency
    # checks bound them.  A framework's own transport (vLLM's shared-memory all-reduce, …) is not.
    bounded_by_profile: bool

    def missing(self) -> str | None:
        """None when the framework can run here, else a one-line reason naming the install command."""

    def run(self, cfg: "RunConfig", *, backend: str = "auto", timeout_s: float = 300.0,
            available_ranks: int | None = None, nodes: "NodeLaunch | None" = None) -> "RunDocument":
        """Run ``cfg`` and return its run document; ``nodes`` puts the ranks on several nodes."""


class OursAdapter:
    name = "ours"
    bounded_by_profile = True

    def missing(self) -> str | None:
        return None

    def run(self, cfg, *, backend="auto", timeout_s=300.0, available_ranks=None, nodes=None):
        # Lazy, as every adapter's runner: the plugin imports this registry, and the runners reach torch.
        from llmcomm_tests.runtime.measure import run_engine

        return run_engine(cfg, backend=backend, timeout_s=timeout_s, available_ranks=available_ranks, nodes=nodes)


class _OneHostAdapter:
    """A framework that starts its own ranks, on one host."""

    name = ""
    bounded_by_profile = False

    def refuse_nodes(self, nodes) -> None:
        if nodes is not None:
            raise ValueError(f"framework {self.name} starts its own ranks on one host; several nodes need "
                             "framework: ours")


class VllmAdapter(_OneHostAdapter):
    name = "vllm"

    def missing(self) -> str | None:
        from llmcomm_tests.frameworks.vllm_adapter import missing

        return missing()

    def run(self, cfg, *, backend="auto", timeout_s=300.0, available_ranks=None, nodes=None):
        from llmcomm_tests.frameworks.vllm_adapter import run_in_vllm

        self.refuse_nodes(nodes)
        # vLLM picks its communicators; the backend says which device it runs on
        return run_in_vllm(cfg, timeout_s=timeout_s, available_ranks=available_ranks, backend=backend)


class TransformersAdapter(_OneHostAdapter):
    name = "transformers"

    def missing(self) -> str | None:
        from llmcomm_tests.frameworks.hf_adapter import missing

        return missing()

    def run(self, cfg, *, backend="auto", timeout_s=300.0, available_ranks=None, nodes=None):
        from llmcomm_tests.frameworks.hf_adapter import run_in_transformers

        self.refuse_nodes(nodes)
        return run_in_transformers(cfg, backend=backend, timeout_s=timeout_s, available_ranks=available_ranks)


ADAPTERS: dict[str, FrameworkAdapter] = {}


def register(adapter: FrameworkAdapter) -> FrameworkAdapter:
    """Make ``adapter`` the one for ``adapter.name`` (``framework:`` in a spec)."""
    ADAPTERS[adapter.name] = adapter
    return adapter


for _adapter in (OursAdapter(), VllmAdapter(), TransformersAdapter()):
    register(_adapter)


def adapter_for(framework: str) -> FrameworkAdapter:
    """The adapter registered for ``framework``; ValueError naming the known ones otherwise."""
    try:
        return ADAPTERS[framework]
    except KeyError:
        raise ValueError(f"unknown framework {framework!r}; known: {', '.join(ADAPTERS)}") from None
