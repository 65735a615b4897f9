"""Environment facts: what the one Environment captures, its two stored forms, and the CUDA device count."""

import subprocess
import sys
from types import SimpleNamespace

import pytest

from llmcomm_tests.core import envinfo
from llmcomm_tests.core.envinfo import Environment

CAPTURED = {"CUDA_VISIBLE_DEVICES": "1,3", "CUDA_DEVICE_MAX_CONNECTIONS": "1", "UCX_TLS": "rc,cuda_copy",
            "FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "NCCL_ALGO": "Ring", "GLOO_SOCKET_IFNAME": "lo",
            "TORCH_NCCL_BLOCKING_WAIT": "1"}
NOT_CAPTURED = {"LLMCOMM_UNRELATED": "x", "UCXX": "not a UCX_ variable", "CUDA_HOME": "/usr/local/cuda"}


@pytest.fixture
def environment(monkeypatch, tmp_path):
    for name, value in {**CAPTURED, **NOT_CAPTURED}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NCCL_CONF_FILE", raising=False)
    return tmp_path


def test_variables_that_change_communication_are_captured(environment):
    captured = envinfo.comm_variables()
    assert {k: captured.get(k) for k in CAPTURED} == CAPTURED
    assert not set(NOT_CAPTURED) & set(captured)
    assert list(captured) == sorted(captured)


def test_nccl_config_files_are_captured(environment, monkeypatch):
    (environment / ".nccl.conf").write_text("NCCL_PROTO=Simple\n")
    system = envinfo.NCCL_SYSTEM_CONFIG
    expected_system = {system: open(system).read()} if _readable(system) else {}
    assert envinfo.nccl_config_files() == {str(environment / ".nccl.conf"): "NCCL_PROTO=Simple\n", **expected_system}
    own = environment / "my-nccl.conf"
    own.write_text("NCCL_ALGO=Tree\n")
    monkeypatch.setenv("NCCL_CONF_FILE", str(own))  # replaces ~/.nccl.conf, as in NCCL >= 2.23
    assert envinfo.nccl_config_files() == {str(own): "NCCL_ALGO=Tree\n", **expected_system}
    monkeypatch.setenv("NCCL_CONF_FILE", str(environment / "missing.conf"))
    assert envinfo.nccl_config_files() == expected_system


RANK = SimpleNamespace(backend="gloo", world_size=1)


def test_fingerprint_and_run_document_carry_them(environment):
    (environment / ".nccl.conf").write_text("NCCL_PROTO=LL\n")
    for env in (Environment.capture().fingerprint(), Environment.capture(RANK).rank_document()):
        assert {k: env["variables"].get(k) for k in CAPTURED} == CAPTURED
        assert env["nccl_config"][str(environment / ".nccl.conf")] == "NCCL_PROTO=LL\n"


def test_stored_forms_keep_their_keys():
    """Reports, run documents and stored baselines read these keys: they must not move."""
    import torch

    assert list(Environment.capture().fingerprint()) == [
        "llmcomm_tests", "torch", "nccl", "python", "host", "platform", "cpu_count", "cuda_devices", "gpu_models",
        "driver", "variables", "nccl_config"]
    rank = Environment.capture(RANK).rank_document()
    expected = ["torch", "python", "host", "backend", "world_size", "cuda", "nccl", "devices", "cpu_count",
                "variables", "nccl_config"] + (["driver"] if torch.cuda.is_available() else [])
    assert list(rank) == expected
    assert rank["torch"] == str(torch.__version__) and rank["backend"] == "gloo" and rank["world_size"] == 1


def test_a_session_captures_without_importing_torch():
    code = ("import sys\nfrom llmcomm_tests.core.envinfo import Environment\n"
            "env = Environment.capture()\nprint(env.fingerprint()['torch'] == env.packages['torch'], 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["True", "False"], out.stderr


def _readable(path) -> bool:
    try:
        open(path).close()
        return True
    except OSError:
        return False


def test_device_count_asks_torch_in_a_child_and_leaves_this_process_without_torch():
    """Where a driver is present the count is torch's own, asked in a child process with this
    environment; this process imports no torch, so it initialises no CUDA before the launcher's fork
    server starts.  (A CPU build of torch answers 0 whatever CUDA_VISIBLE_DEVICES says: the test
    below checks that the variable is honoured where there are devices.)"""
    code = """
import os, sys
from llmcomm_tests.core import envinfo
envinfo._driver_present = lambda: True
os.environ["CUDA_VISIBLE_DEVICES"] = ""
print(envinfo.cuda_device_count(), "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.stdout.split() == ["0", "False"], out.stderr


def test_device_count_is_zero_without_a_driver_and_cached_per_visible_devices(monkeypatch):
    calls = []
    monkeypatch.setattr(envinfo, "_counted", {})
    monkeypatch.setattr(envinfo, "_count", lambda: calls.append(1) or 2)
    monkeypatch.setattr(envinfo, "_driver_present", lambda: False)
    assert envinfo.cuda_device_count() == 0 and not calls  # no driver: torch is not asked
    monkeypatch.setattr(envinfo, "_driver_present", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert envinfo.cuda_device_count() == 2 and envinfo.cuda_device_count() == 2 and len(calls) == 1
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # another value is counted again
    envinfo.cuda_device_count()
    assert len(calls) == 2


@pytest.mark.skipif(not envinfo._driver_present(), reason="needs an NVIDIA driver")
def test_device_count_honours_cuda_visible_devices(monkeypatch):
    monkeypatch.setattr(envinfo, "_counted", {})
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    devices = envinfo.cuda_device_count()
    if devices == 0:
        pytest.skip("a driver but no CUDA device torch can use")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert envinfo.cuda_device_count() == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert envinfo.cuda_device_count() == 1


def test_secret_looking_values_stay_out_of_the_environment_record(monkeypatch, tmp_path):
    """Reports are CI artifacts: a variable or NCCL config line whose name looks secret is recorded
    as redacted (its name stays, so a reader sees that it was set)."""
    conf = tmp_path / "nccl.conf"
    conf.write_text("NCCL_SOCKET_IFNAME=eth0\nNCCL_IB_PASSWORD = hunter2\n# NCCL_API_KEY=not-a-setting\n")
    monkeypatch.setenv("NCCL_SECRET_TOKEN", "s3cr3t")
    monkeypatch.setenv("NCCL_DEBUG", "INFO")
    monkeypatch.setenv("NCCL_CONF_FILE", str(conf))
    variables = envinfo.comm_variables()
    assert variables["NCCL_SECRET_TOKEN"] == envinfo.REDACTED and variables["NCCL_DEBUG"] == "INFO"
    text = envinfo.nccl_config_files()[str(conf)]
    assert "hunter2" not in text and "NCCL_IB_PASSWORD = <redacted>" in text and "NCCL_SOCKET_IFNAME=eth0" in text
    recorded = repr(envinfo.Environment.capture().fingerprint())
    assert "s3cr3t" not in recorded and "hunter2" not in recorded
