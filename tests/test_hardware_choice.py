"""Which hardware profile a case is judged against: --llmcomm-hardware, else the spec's
``hardware:``, else the machine's own (cpu-loopback on gloo, the preset for the detected GPU model
× GPUs per node on NCCL) — and a CUDA machine no preset describes fails the session."""

import json

import pytest

from llmcomm_tests.core import envinfo
from llmcomm_tests.suite import options, session as session_mod
from llmcomm_tests.analytic.hardware import load_profile, match_preset
from llmcomm_tests.suite.hardware_choice import NoHardwareProfile, machine_profile

QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")

# One rank, no communication: quick; what differs between runs is only the profile's name, which
# decides whether the (impossible) budget written for h100-nvlink4 is judged or not applicable.
SPEC = """\
name: hw
engine: {{preset: tiny, n_layers: 1}}
workload: {{batch: 1, prompt_len: 4, gen_len: 2}}
layouts: ["1x1"]
repeats: 1
warmup: 0
{hardware}
budgets:
  ttft: {{p99: 1ns, hardware: h100-nvlink4}}
"""


def fake_gpus(monkeypatch, model: str, count: int) -> None:
    """Simulate a CUDA node: the driver's device list is what the plugin reads (no torch)."""
    monkeypatch.setattr(options, "cuda_device_count", lambda: count)
    monkeypatch.setattr(session_mod, "cuda_device_count", lambda: count)
    monkeypatch.setattr(envinfo, "gpu_models", lambda: [model] * count)
    monkeypatch.setattr(envinfo, "cuda_device_count", lambda: count)  # what the session's Environment reads


def test_presets_are_found_by_device_model_and_node_size():
    assert match_preset("NVIDIA H100 80GB HBM3", 8).name == "h100-nvlink4"
    assert match_preset("NVIDIA H100 80GB HBM3", 4).name == "h100-nvlink4-ib-4gpu"
    assert match_preset("NVIDIA A100-SXM4-80GB", 8).name == "a100-nvlink3"
    assert match_preset("NVIDIA H100 PCIe", 8).name == "pcie-gen5"
    assert match_preset("NVIDIA H100 80GB HBM3", 2) is None  # no 2-GPU H100 node preset
    assert match_preset("NVIDIA H200", 8).name == "h200-nvlink4"
    assert match_preset("NVIDIA H200 NVL", 8) is None  # a whole model name, not a substring
    assert match_preset("NVIDIA H200", 1) is None  # one GPU: no node preset describes it


def test_machine_profile_on_gloo_cuda_and_unknown_cuda(monkeypatch):
    assert machine_profile(None, "gloo").name == "cpu-loopback"
    fake_gpus(monkeypatch, "NVIDIA H100 80GB HBM3", 8)
    choice = machine_profile(None, "nccl")
    assert (choice.name, choice.how) == ("h100-nvlink4", "detected NVIDIA H100 80GB HBM3 × 8")
    fake_gpus(monkeypatch, "NVIDIA B200", 8)
    with pytest.raises(NoHardwareProfile) as err:
        machine_profile(None, "nccl")
    assert str(err.value) == ("no hardware profile for NVIDIA B200 × 8: pass --llmcomm-hardware "
                              "or run llmcomm calibrate")
    assert machine_profile("pcie-gen4", "nccl").how == "--llmcomm-hardware pcie-gen4"


def test_gpus_on_cuda_without_a_profile_fails_the_session(pytester, monkeypatch):
    fake_gpus(monkeypatch, "NVIDIA B200", 8)
    pytester.makefile(".yaml", **{"slo_specs/hw": SPEC.format(hardware="")})
    result = pytester.runpytest_inprocess(*QUIET, "--gpus", "8", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: llmcomm: no hardware profile for NVIDIA B200 × 8: "
                                 "pass --llmcomm-hardware or run llmcomm calibrate"])
    # A matching node picks its preset and says how.
    fake_gpus(monkeypatch, "NVIDIA H100 80GB HBM3", 8)
    result = pytester.runpytest_inprocess(*QUIET, "--gpus", "8", "--collect-only")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*backend nccl*hardware profile h100-nvlink4 (detected NVIDIA H100 80GB HBM3 × 8)*"])


def test_a_spec_naming_its_hardware_needs_no_detection(pytester, monkeypatch):
    fake_gpus(monkeypatch, "NVIDIA B200", 8)
    pytester.makefile(".yaml", **{"slo_specs/hw": SPEC.format(hardware="hardware: h100-nvlink4")})
    result = pytester.runpytest_inprocess(*QUIET, "--gpus", "8", "--collect-only")
    assert result.ret == pytest.ExitCode.OK


def _case_result(pytester) -> dict:
    data = json.loads((pytester.path / "reports" / "llmcomm-report.json").read_text())
    items = data.get("items") or data.get("results") or data.get("cases")
    return items[0]


def test_the_specs_hardware_selects_the_profile_and_the_option_overrides_it(pytester):
    pytester.makeini("[pytest]\nllmcomm_report_dir = reports\n")
    # The spec names h100-nvlink4: its budget applies (and, at 1 ns, fails).
    pytester.makefile(".yaml", **{"slo_specs/hw": SPEC.format(hardware="hardware: h100-nvlink4")})
    result = pytester.runpytest_subprocess(*QUIET)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*budget*ttft*FAIL*"])
    assert _case_result(pytester)["hardware"] == "h100-nvlink4"
    # The same spec without hardware: runs on this machine's profile (cpu-loopback): n/a, passes.
    pytester.makefile(".yaml", **{"slo_specs/hw": SPEC.format(hardware="")})
    result = pytester.runpytest_subprocess(*QUIET)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert _case_result(pytester)["hardware"] == "cpu-loopback"
    # --llmcomm-hardware overrides the spec's, and the header says so.
    pytester.makefile(".yaml", **{"slo_specs/hw": SPEC.format(hardware="hardware: h100-nvlink4")})
    result = pytester.runpytest_subprocess(*QUIET, "--llmcomm-hardware", "cpu-loopback")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["*hardware profile cpu-loopback (--llmcomm-hardware cpu-loopback), "
                                 "overriding every spec's hardware:*"])
    assert _case_result(pytester)["hardware"] == "cpu-loopback"


def test_an_unknown_spec_hardware_names_the_spec(tmp_path):
    from llmcomm_tests.spec import load_spec

    path = tmp_path / "slo_specs" / "hw.yaml"
    path.parent.mkdir()
    path.write_text(SPEC.format(hardware="hardware: h100-nvlink4x8"))
    case = load_spec(path).cases()[0]
    state = session_mod.LLMCommSession(options.LLMCommOptions(
        gpus=None, backend="gloo", hardware=None, report_dir="r", repeats=None, timeout=60.0,
        baseline_save=None, baseline_compare=None, baseline_dir="b"))
    with pytest.raises(ValueError, match=r"hw.yaml: hardware: unknown hardware profile 'h100-nvlink4x8'"):
        state.profile_for(case)


def test_a_calibrated_profile_is_found_by_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".llmcomm" / "profiles").mkdir(parents=True)
    data = load_profile("cpu-loopback").to_dict()
    data["name"] = "my-box"
    import yaml

    (tmp_path / ".llmcomm" / "profiles" / "my-box.yaml").write_text(yaml.safe_dump(data))
    assert load_profile("my-box").name == "my-box"


def test_calibrate_names_the_profile_as_asked(tmp_path, capsys):
    from llmcomm_tests.analytic import latency
    from llmcomm_tests.commands.calibrate import main as calibrate_main
    from test_analytic_latency import synthetic_rows

    rows = synthetic_rows(0.2e-3, 2e9, 2, list(latency.OPS))
    (tmp_path / "bench.json").write_text(json.dumps({"schema": "llmcomm.bench-comm/1", "rows": rows}))
    bench = str(tmp_path / "bench.json")
    assert calibrate_main(["--rows", bench, "--out", str(tmp_path / "a.yaml"), "--name", "lab3-h200x8"]) == 0
    assert load_profile(tmp_path / "a.yaml").name == "lab3-h200x8"
    assert "budgets written with `hardware: lab3-h200x8` apply on it" in capsys.readouterr().out
    assert calibrate_main(["--rows", bench, "--out", str(tmp_path / "my-box.yaml")]) == 0  # the file's stem
    assert load_profile(tmp_path / "my-box.yaml").name == "my-box"
    assert calibrate_main(["--rows", bench, "--out", str(tmp_path / "b.yaml"), "--name", "My Box"]) == 2
    assert "--name 'My Box': a profile name is lower-case" in capsys.readouterr().err


def test_a_calibrated_profile_naming_the_device_is_picked_first(tmp_path, monkeypatch):
    import yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".llmcomm" / "profiles").mkdir(parents=True)
    data = load_profile("h100-nvlink4").to_dict()
    data.update(name="lab-h100", devices=["H100 80GB HBM3"])
    (tmp_path / ".llmcomm" / "profiles" / "lab-h100.yaml").write_text(yaml.safe_dump(data))
    assert match_preset("NVIDIA H100 80GB HBM3", 8).name == "lab-h100"


def test_an_unknown_spec_hardware_fails_its_case_in_one_line(pytester):
    pytester.makeini("[pytest]\nllmcomm_report_dir = reports\n")
    pytester.makefile(".yaml", **{"slo_specs/hw": SPEC.format(hardware="hardware: h100-nvlink4x8")})
    result = pytester.runpytest_inprocess(*QUIET)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["hw?tp1-pp1-b1-s4-g2?: *hw.yaml: hardware: unknown hardware profile 'h100-nvlink4x8'*"])
    assert "Traceback" not in result.stdout.str()
