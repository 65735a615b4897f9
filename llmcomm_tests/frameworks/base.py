"""One interface over the engines a case can run in: ``framework: ours | vllm | transformers``.

Every adapter takes the same :class:`~llmcomm_tests.runtime.measure.RunConfig` and returns the same run
document (``llmcomm.run/1``: tokens, per-token times, metrics, op records in our schema), so the
volume model, timing checks and reports do not care which engine ran.  An adapter whose framework
is not installed says so with the install command (:func:`missing`), and the case is skipped with
that reason.  No torch import here: the pytest plugin side calls :func:`missing`.
"""

from __future__ import annotations

FRAMEWORKS = ("ours", "vllm", "transformers")


def missing(framework: str) -> str | None:
    """None when ``framework`` can run here, else a one-line reason naming the install command."""
    if framework == "ours":
        return None
    if framework == "vllm":
        from llmcomm_tests.frameworks.vllm_adapter import missing as vllm_missing

        return vllm_missing()
    if framework == "transformers":
        from llmcomm_tests.frameworks.hf_adapter import missing as hf_missing

        return hf_missing()
    raise ValueError(f"unknown framework {framework!r}; known: {', '.join(FRAMEWORKS)}")


def run_case(framework: str, cfg, *, backend: str = "auto", timeout_s: float = 300.0,
             available_ranks: int | None = None, nodes=None) -> dict:
    """Run ``cfg`` in ``framework`` and return its run document; ``nodes`` (a NodeLaunch) puts
    our engine's ranks on several nodes (the frameworks start their own ranks on one host)."""
    if framework == "ours":
        from llmcomm_tests.runtime.measure import run_case as ours

        return ours(cfg, backend=backend, timeout_s=timeout_s, available_ranks=available_ranks, nodes=nodes)
    if nodes is not None:
        raise ValueError(f"framework {framework} starts its own ranks on one host; several nodes need framework: ours")
    if framework == "vllm":
        from llmcomm_tests.frameworks.vllm_adapter import run_case as vllm_run

        return vllm_run(cfg, timeout_s=timeout_s, available_ranks=available_ranks)
    if framework == "transformers":
        from llmcomm_tests.frameworks.hf_adapter import run_case as hf_run

        return hf_run(cfg, backend=backend, timeout_s=timeout_s, available_ranks=available_ranks)
    raise ValueError(f"unknown framework {framework!r}; known: {', '.join(FRAMEWORKS)}")
