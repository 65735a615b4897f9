#!/usr/bin/env bash
# NCCL timing on one GPU, one table (≤ 5 minutes on one H200): a one-rank NCCL case, CUDA-event vs
# host timing of an all_reduce, the recorder's cost per op on CUDA, and planted GPU delays asked vs
# measured.  Run from the repository root whenever a GPU is available; paste the table in the note.
#     bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi missing or lists no device): this check needs one GPU" >&2
    exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 300 python benchmarks/gpu_check.py
