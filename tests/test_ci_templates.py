"""The CI templates in ci/: valid YAML with the structure GitHub Actions and GitLab expect, and the
test step's own shell lines, run here on CPU.

The test step is taken from the file as written (GitHub: the ``run`` of the step with id ``slo``;
GitLab: the job's ``script`` lines) and run under bash the way each CI runs it, with the template's
variables set for this machine: GPUS=2 (two gloo ranks), a small spec of our own (cases that need
more than two ranks are skipped, which shows --gpus reaching the plugin) with loose tolerances so
that a noisy host does not decide the exit status, and report and baseline folders in a temp dir.
Two runs per template: the first finds no baseline and saves one, the second compares with it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
GITHUB = ROOT / "ci" / "github-actions.yml"
GITLAB = ROOT / "ci" / "gitlab-ci.yml"
VARIABLES = ("GPUS", "BASELINE", "SAVE_BASELINE", "SLO_SPECS", "SELECT", "PYTEST_ARGS", "TORCH_INSTALL",
             "LLMCOMM_REPORT_DIR", "LLMCOMM_BASELINE_DIR")

# Loose on purpose: the templates are under test here, not this host's latency.
SMOKE_SPEC = """\
name: ci-smoke
engine: tiny
dtype: fp32
workload: {batch: 1, prompt_len: 16, gen_len: 4}
layouts: ["2x1", "1x2", "2x2"]
repeats: 3
warmup: 1
hardware: cpu-loopback
tolerances:
  latency: {inside_fraction: 0.01, slack: 100}
budgets:
  hardware: cpu-loopback
  ttft: {p99: 60s}
  bytes_per_token: {max: 1 MiB}
baseline: {threshold: 1000}
"""


def _load(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _github_job(name: str = "slo") -> dict:
    return _load(GITHUB)["jobs"][name]


def _github_step(job: dict, *, uses: str | None = None, step_id: str | None = None) -> dict:
    for step in job["steps"]:
        if (uses and step.get("uses", "").split("@")[0] == uses) or (step_id and step.get("id") == step_id):
            return step
    raise AssertionError(f"no step {uses or step_id} in {GITHUB.name}")


def _gitlab_job(name: str = "llmcomm-slo") -> dict:
    doc = _load(GITLAB)
    assert {k for k, v in doc.items() if isinstance(v, dict) and "script" in v} == {"llmcomm-slo", "llmcomm-ab"}
    return doc[name]


# -- structure -------------------------------------------------------------------------------------


def test_github_workflow_structure():
    doc = _load(GITHUB)
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads a bare `on` key as true
    assert {"pull_request", "push", "workflow_dispatch"} <= set(triggers)
    assert {"GPUS", "BASELINE", "LLMCOMM_REPORT_DIR", "LLMCOMM_BASELINE_DIR"} <= set(doc["env"])
    assert doc["permissions"]["checks"] == "write"
    job = _github_job()
    assert job["runs-on"] == ["self-hosted", "gpu"]
    install = next(s for s in job["steps"] if s.get("name") == "Install")
    assert "pip install -e ." in install["run"] and "TORCH_INSTALL" in install["run"]

    slo = _github_step(job, step_id="slo")
    assert slo["shell"] == "bash"
    assert "${{" not in slo["run"], "the test step must read shell variables only (it is run as is by the tests)"
    for needed in ('--gpus "$GPUS"', "--llmcomm-baseline-compare", "--llmcomm-baseline-save",
                   "--llmcomm-baseline-dir", "--llmcomm-report-dir", "junit.xml", "llmcomm_tests.commands report"):
        assert needed in slo["run"], needed

    restore = _github_step(job, uses="actions/cache/restore")
    save = _github_step(job, uses="actions/cache/save")
    assert restore["with"]["path"] == save["with"]["path"] == "${{ env.LLMCOMM_BASELINE_DIR }}"
    assert "SAVE_BASELINE" in save["if"]
    steps = [s.get("id") or s.get("uses", "").split("@")[0] for s in job["steps"]]
    assert steps.index("actions/cache/restore") < steps.index("slo") < steps.index("actions/cache/save")

    junit = _github_step(job, uses="mikepenz/action-junit-report")
    assert junit["if"] == "always()"
    assert junit["with"]["report_paths"].endswith("/junit.xml")
    upload = _github_step(job, uses="actions/upload-artifact")
    assert upload["if"] == "always()"
    assert "*.html" in upload["with"]["path"] and "*.json" in upload["with"]["path"]
    for step in job["steps"]:
        if "uses" in step:
            assert "@v" in step["uses"], f"unpinned action {step['uses']}"


def test_gitlab_job_structure():
    job = _gitlab_job()
    assert job["tags"] == ["gpu"]
    assert set(VARIABLES) <= set(job["variables"])
    assert any(r.get("variables", {}).get("SAVE_BASELINE") == "true" for r in job["rules"])
    assert "python -m pip install -e ." in job["before_script"]
    script = "\n".join(job["script"])
    for needed in ('--gpus "$GPUS"', "--llmcomm-baseline-compare", "--llmcomm-baseline-save",
                   "--llmcomm-baseline-dir", "--llmcomm-report-dir", "junit.xml", "llmcomm_tests.commands report"):
        assert needed in script, needed
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always"
    assert artifacts["reports"]["junit"] == f"{job['variables']['LLMCOMM_REPORT_DIR']}/junit.xml"
    assert f"{job['variables']['LLMCOMM_REPORT_DIR']}/" in artifacts["paths"]
    assert job["cache"]["paths"] == [job["variables"]["LLMCOMM_BASELINE_DIR"] + "/"]


def test_merge_request_code_reaches_the_gpu_runner_only_after_approval():
    """docs/security.md: a pull request's jobs wait for a reviewer (GitHub environment with required
    reviewers, never pull_request_target); GitLab's merge-request jobs are manual."""
    doc = _load(GITHUB)
    triggers = doc.get("on", doc.get(True))
    assert "pull_request_target" not in triggers
    text = GITHUB.read_text(encoding="utf-8")
    assert "Required reviewers" in text and "pull_request_target" in text  # the comment says why
    for name, job in doc["jobs"].items():
        if "self-hosted" in job["runs-on"]:
            assert "github.event_name == 'pull_request' && 'llmcomm-gpu-untrusted'" in job["environment"], name
    gitlab = _load(GITLAB)
    for name in ("llmcomm-slo", "llmcomm-ab"):
        mr = [r for r in gitlab[name]["rules"] if "merge_request_event" in r.get("if", "")]
        assert mr and all(r.get("when") == "manual" for r in mr), name
    assert "when: manual" in GITLAB.read_text(encoding="utf-8").split("stages:")[0]  # the comment says why


def test_both_templates_run_the_same_test_step():
    github = [line for line in _github_step(_github_job(), step_id="slo")["run"].splitlines() if line.strip()]
    gitlab = [line for entry in _gitlab_job()["script"] for line in entry.splitlines() if line.strip()]
    assert github == gitlab


def test_ab_jobs_build_two_environments_and_run_the_gate():
    github, gitlab = _github_job("ab"), _gitlab_job("llmcomm-ab")
    install = _github_step(github, step_id="ab-install")["run"]
    gate = _github_step(github, step_id="ab")["run"]
    for text in (install, "\n".join(gitlab["before_script"])):
        assert ".venv-$arm" in text and "AB_${arm^^}_INSTALL" in text and "pip install -e ." in text
    for text in (gate, "\n".join(gitlab["script"])):
        assert "llmcomm_tests.commands ab --pairs \"$AB_PAIRS\" .venv-old/bin/python .venv-new/bin/python --" in text
        assert "junit.xml" in text and "llmcomm_tests.commands report" in text
    assert [line for line in gate.splitlines() if line.strip()] == \
        [line for entry in gitlab["script"] for line in entry.splitlines() if line.strip()]
    assert _github_step(github, uses="mikepenz/action-junit-report")["if"] == "always()"
    assert "*.html" in _github_step(github, uses="actions/upload-artifact")["with"]["path"]
    assert gitlab["artifacts"]["reports"]["junit"] == "reports-ab/junit.xml"
    # the command line the job runs parses to the gate's pytest call
    from llmcomm_tests.commands import ab, build_parser

    args = build_parser("ab").parse_args(["ab", "--pairs", "40", "python3", "python3", "--", "slo_specs", "--gpus", "8"])
    cmd = ab.command(args)
    assert cmd[1:5] == ["-m", "pytest", cmd[3], "--llmcomm-ab-pairs=40"] and cmd[3].startswith("--llmcomm-ab=")
    assert cmd[-3:] == ["slo_specs", "--gpus", "8"]


def test_readme_documents_every_variable():
    readme = (ROOT / "ci" / "README.md").read_text(encoding="utf-8")
    for name in VARIABLES:
        assert f"`{name}`" in readme, name


# -- the test step, run here ----------------------------------------------------------------------


def _run_step(script: str, tmp_path: Path, *, save: bool) -> subprocess.CompletedProcess:
    specs = tmp_path / "slo_specs"
    specs.mkdir(exist_ok=True)
    (specs / "ci-smoke.yaml").write_text(SMOKE_SPEC)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LLMCOMM_", "PYTEST_"))}
    pytest_args = "-p no:cacheprovider -q"
    if not any(ep.value == "llmcomm_tests.suite.plugin" for ep in importlib.metadata.entry_points(group="pytest11")):
        pytest_args += " -p llmcomm_tests.suite.plugin"  # a bare checkout: the spec dir is outside our conftest's reach
    env.update(GPUS="2", BASELINE="ci-smoke", SAVE_BASELINE="true" if save else "false", SLO_SPECS=str(specs),
               SELECT="tp2-pp1 or tp2-pp2", PYTEST_ARGS=pytest_args,
               LLMCOMM_REPORT_DIR=str(tmp_path / "reports"), LLMCOMM_BASELINE_DIR=str(tmp_path / "baselines"))
    # The job's `python` is its venv's; here it is the interpreter running these tests (a wrapper,
    # not a symlink: a symlinked venv python outside its venv loses the venv's packages).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (bin_dir / "python").chmod(0o755)
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", os.defpath)])
    step = tmp_path / "step.sh"
    step.write_text(script)
    # GitHub's `shell: bash` and GitLab's bash runner both stop at the first failing line.
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(step)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def _check_run(done: subprocess.CompletedProcess, reports: Path, *, compared: bool) -> None:
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    junit = reports / "junit.xml"
    assert junit.is_file(), done.stdout[-2000:]
    cases = ET.parse(junit).getroot().iter("testcase")
    outcome = {c.get("name"): ("skipped" if c.find("skipped") is not None else
                               "failed" if c.find("failure") is not None or c.find("error") is not None else "passed")
               for c in cases}
    assert outcome == {"tp2-pp1-b1-s16-g4": "passed", "tp2-pp2-b1-s16-g4": "skipped"}, outcome
    session = json.loads((reports / "llmcomm-report.json").read_text())
    (item,) = session["items"]
    baseline_rows = [r for r in item["verdict"]["rows"] if r["check"] == "baseline"]
    if compared:
        assert baseline_rows and all(r["verdict"] != "fail" for r in baseline_rows), baseline_rows
    else:  # the first run only saves
        assert [r["name"] for r in baseline_rows] == ["saved to ci-smoke"], baseline_rows
        assert "no stored baseline 'ci-smoke'" in done.stdout
    html = (reports / "llmcomm-report.html").read_text(encoding="utf-8")
    assert "tp2-pp1-b1-s16-g4" in html and "data:image/png;base64," in html


@pytest.mark.parametrize("template", ["github", "gitlab"])
def test_the_test_step_runs_on_cpu(template, tmp_path):
    if template == "github":
        script = _github_step(_github_job(), step_id="slo")["run"]
    else:
        script = "\n".join(_gitlab_job()["script"]) + "\n"
    reports = tmp_path / "reports"
    first = _run_step(script, tmp_path, save=True)
    _check_run(first, reports, compared=False)
    saved = list((tmp_path / "baselines").glob("*/ci-smoke/ci-smoke/*.json"))
    assert [p.name for p in saved] == ["tp2-pp1-b1-s16-g4.json"]

    second = _run_step(script, tmp_path, save=False)
    _check_run(second, reports, compared=True)
