#!/usr/bin/env bash
# The one script to run when a GPU is lent (≤ 10 minutes on one H100), one table, also written to
# $OUT/gpu-check.txt (else ./gpu-check/): versions, the fork server leaves CUDA uninitialised, a
# one-rank NCCL case vs CPU tokens, CUDA-event vs host timing, the recorder's cost per op on CUDA,
# planted GPU delays asked vs measured, TP2/PP2/TP2xPP2 with the ranks sharing the GPU (function
# only), the 8-GPU suite's weight generation predicted, llama-3.1-8b bf16 at 1x1.  Run from the
# repository root whenever a GPU is available; paste the table in the note.
#     bash benchmarks/gpu_check.sh             # needs one GPU
#     bash benchmarks/gpu_check.sh --dry-run   # no GPU: the parts a CPU can run, on gloo
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" != "--dry-run" ]] && { ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; }; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi missing or lists no device): this check needs one GPU" >&2
    exit 2
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 570 python benchmarks/gpu_check.py "$@"
