"""Environment variables the framework adapters read, named without importing the adapters (which
reach torch): for callers that set or mention them, such as the A/B arm servers."""

VLLM_PYTHON_ENV = "LLMCOMM_VLLM_PYTHON"  # the interpreter vLLM runs with, where it has its own venv
