"""The command line as a user meets it: run, its refusals, torchrun's entry point, predict."""

import json
import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "llmcomm_tests.commands"]


def test_run_prints_a_summary_and_writes_the_document(tmp_path):
    out = tmp_path / "run.json"
    proc = subprocess.run(CLI + ["run", "--engine", "tiny", "--tp", "2", "--pp", "2", "--batch", "2",
                                 "--prompt-len", "16", "--gen-len", "4", "--repeats", "2", "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "layout tp=2 pp=2 (4 ranks, gloo)" in proc.stdout and "TTFT" in proc.stdout and "TPOT" in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["schema"] == "llmcomm.run/1"
    assert {k: doc["case"][k] for k in ("tp", "pp", "batch", "prompt_len", "gen_len", "dtype", "backend",
                                        "world_size")} == {"tp": 2, "pp": 2, "batch": 2, "prompt_len": 16,
                                                           "gen_len": 4, "dtype": "fp32", "backend": "gloo",
                                                           "world_size": 4}
    assert doc["case"]["engine"]["hidden"] == 256
    assert doc["env"]["torch"].startswith("2.") and doc["env"]["variables"]["GLOO_SOCKET_IFNAME"] == "lo"
    assert len(doc["tokens"]) == 2 and all(len(t) == 4 for t in doc["tokens"])
    m = doc["metrics"]
    assert 0 < m["ttft_s"] <= m["e2e_s"] and len(m["itl_s"]) == 2 * 3
    assert m["tpot_s"] == pytest.approx((m["e2e_s"] - m["ttft_s"]) / 3, rel=0.5)
    assert doc["ops"] and doc["volume"] and doc["comm"]["bytes_per_token"] > 0


@pytest.mark.parametrize("args, reason", [
    (["--tp", "3"], "tp=3 does not divide 8 attention heads"),
    (["--pp", "5"], "pp=5 exceeds 4 layers"),
    (["--tp", "2", "--pp", "2", "--ranks", "2"], "needs 4 ranks, only 2 available"),
    (["--inject", "all_reduce:delay=fast"], "bad fault 'all_reduce:delay=fast'"),
    pytest.param(["--tp", "2", "--backend", "nccl"], "backend nccl needs one CUDA device per rank: 2 ranks, 0 devices",
                 marks=pytest.mark.skipif(os.path.isdir("/proc/driver/nvidia/gpus"), reason="this host has GPUs")),
])
def test_impossible_runs_are_refused_before_launch_with_one_line(args, reason):
    proc = subprocess.run(CLI + ["run"] + args, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert reason in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_rank_entry_point_runs_under_torchrun(tmp_path):
    """Multi-node runs use torchrun's rendezvous; the same rank code must work under it."""
    out = tmp_path / "torchrun.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "llmcomm_tests.rank", "--tp", "2", "--prompt-len", "8", "--gen-len", "3",
                           "--repeats", "1", "--json", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["case"]["world_size"] == 2 and {o["rank"] for o in doc["ops"]} == {0, 1}
    single = subprocess.run(CLI + ["run", "--prompt-len", "8", "--gen-len", "3", "--repeats", "1", "--json",
                                   str(tmp_path / "one.json")], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0
    assert doc["tokens"] == json.loads((tmp_path / "one.json").read_text())["tokens"]


def test_help_does_not_import_torch():
    code = "import sys; from llmcomm_tests.commands import main\ntry: main(['--help'])\nexcept SystemExit: pass\n" \
           "print('torch' in sys.modules)"
    assert subprocess.check_output([sys.executable, "-c", code], text=True).strip().endswith("False")
