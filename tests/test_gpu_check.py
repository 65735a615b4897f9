"""The GPU probe on a host without a GPU: one clear line and a non-zero exit, from the shell
script (no nvidia-smi device) and from the Python part (torch without CUDA); its ``--dry-run``
runs the parts a CPU can, on gloo; and its rows fail when what they check goes wrong."""

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


def test_dry_run_runs_the_cpu_parts_on_gloo_and_marks_the_others_na(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), OUT=str(tmp_path), CUDA_VISIBLE_DEVICES="",
               PATH=os.pathsep.join([os.path.dirname(sys.executable), os.environ["PATH"]]))  # the script runs `python`
    out = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run"], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    written = (tmp_path / "gpu-check.txt").read_text().splitlines()
    assert written[0].startswith("gpu_check --dry-run on CPU") and written[1] == "15 PASS, 0 FAIL, 3 n/a, 5 info"
    rows = {ln.strip().split("  ")[0]: ln.split()[-1] for ln in written[4:]}
    for layout in ("tp2×pp1", "tp1×pp2", "tp2×pp2"):
        assert any(k.startswith(f"tiny {layout} fp32") for k in rows), layout
    per_layout = [ln for ln in written if ln.startswith("  ") and "predicted" not in ln]  # 4 rows per layout
    assert len(per_layout) == 3 * 4 and all(ln.rstrip().endswith("PASS") for ln in per_layout)
    needs_gpu = [ln for ln in written if ln.rstrip().endswith("n/a")]
    assert len(needs_gpu) == 3 and all("dry run: needs a GPU" in ln for ln in needs_gpu)
    assert rows["rank 1 late 5 ms before all_reduce, 2 ranks on gloo/CPU (dry run)"] == "PASS"
    assert rows["predicted 8-GPU suite weight generation (52 cases of 4 specs)"] == "PASS"


@pytest.fixture
def shared(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check_shared

    return gpu_check_shared


def test_layout_rows_fail_where_the_shared_run_differs(shared, monkeypatch):
    """The run on the shared GPU (faked: a real gloo run, then spoilt) against the real reference."""
    from llmcomm_tests.runtime import measure

    real = measure.run_engine
    spoilt = {}

    def run_engine(cfg, backend, timeout_s):
        doc = real(cfg, backend="gloo", timeout_s=timeout_s)
        if os.environ.get("LLMCOMM_SHARE_GPU") != "1":
            return doc
        doc.tokens[0][-1] += 1
        doc.volume[0].bytes += 4
        doc.records[0].transfer_s = float("nan")
        doc.cross_check[1]["match"] = False
        spoilt["done"] = True
        return doc

    monkeypatch.setattr(measure, "run_engine", run_engine)
    rows = shared.layout_rows(2, 1, "nccl", 120)
    assert spoilt and os.environ.get("LLMCOMM_SHARE_GPU") is None  # the share was set for that run only
    assert [r[3] for r in rows] == ["info", "FAIL", "FAIL", "FAIL", "FAIL"]
    assert "1 differ" in rows[2][1] and "1 NaN transfer" in rows[3][1] and "1/2 ranks match" in rows[4][1]


def test_a_rank_that_is_not_late_fails_the_late_rank_row(shared):
    (planted,) = shared.late_rank_rows("gloo", 90, calls=20)
    (absent,) = shared.late_rank_rows("gloo", 90, calls=20, planted_s=0.0)
    assert planted[3] == "PASS" and absent[3] == "FAIL", (planted, absent)


def test_drawn_elements_counts_every_random_number_a_shard_draws(monkeypatch):
    import torch

    from llmcomm_tests.engine import weights
    from llmcomm_tests.engine.config import EngineShape
    from llmcomm_tests.engine.layout import Layout

    # rows and columns that are no multiple of a tile, TP slices that cut tiles
    shape = EngineShape("tile-edges", n_layers=3, hidden=200, n_heads=5, n_kv_heads=5, ffn=300, vocab=1000)
    drawn = []
    real = torch.randn
    monkeypatch.setattr(weights.torch, "randn", lambda *size, **kw: drawn.append(real(*size, **kw).numel()) or
                        real(*size, **kw))
    for layout in (Layout(1, 1), Layout(5, 1), Layout(1, 3), Layout(5, 3)):
        for rank in range(layout.world_size):
            drawn.clear()
            weights.rank_shard(shape, layout, rank, 0)
            assert weights.drawn_elements(shape, layout, rank) == sum(drawn), (layout, rank)


def test_a_part_over_its_limit_fails_and_one_the_budget_cannot_fit_is_na(shared, monkeypatch, tmp_path):
    import time

    import gpu_check

    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setattr(gpu_check, "ROWS", [])
    t0 = time.perf_counter()
    gpu_check.run_part("hangs", lambda: time.sleep(30), 0, 0.5, t0, "title")
    assert time.perf_counter() - t0 < 5
    gpu_check.run_part("too long", lambda: None, gpu_check.BUDGET_S, gpu_check.BUDGET_S, t0, "title")
    assert gpu_check.ROWS[0][0] == "hangs" and gpu_check.ROWS[0][3] == "FAIL"
    assert gpu_check.ROWS[0][1].startswith("PartTimeout: over its limit")
    assert gpu_check.ROWS[1][0] == "too long" and gpu_check.ROWS[1][3] == "n/a" and "s left, it needs" in gpu_check.ROWS[1][1]
    assert (tmp_path / "gpu-check.txt").read_text().splitlines()[1] == "0 PASS, 1 FAIL, 1 n/a, 0 info"
