"""The GPU probe on a host without a GPU: one clear line and a non-zero exit, from the shell
script (no nvidia-smi device) and from the Python part (torch without CUDA)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="a GPU is here: the probe would run")
@pytest.mark.parametrize("command", [["bash", "benchmarks/gpu_check.sh"], [sys.executable, "benchmarks/gpu_check.py"]],
                         ids=["shell", "python"])
def test_gpu_check_without_a_gpu_says_so_in_one_line(command, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OUT=str(tmp_path), CUDA_VISIBLE_DEVICES="")
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gpu_check: no ") and "GPU" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no table from a machine that measured nothing
