"""The overlay venv (arm B's environment): its own interpreter over the running environment's packages."""

import importlib.util
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from llmcomm_tests.judging.ab.overlay import PTH_NAME, overlay_venv


def _find(python: str, module: str) -> tuple[str, str | None]:
    """(sys.executable, where ``module`` is found) in ``python``, with no PYTHONPATH."""
    code = (f"import importlib.util, sys; spec = importlib.util.find_spec({module!r}); "
            f"print(sys.executable); print(spec and spec.origin)")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    executable, origin = done.stdout.splitlines()
    return executable, None if origin == "None" else origin


@pytest.fixture(scope="module")
def overlay(tmp_path_factory) -> str:
    return overlay_venv(tmp_path_factory.mktemp("overlay") / "venv")


@pytest.mark.parametrize("module", ["torch", "pytest"])
def test_overlay_sees_this_environments_packages_under_its_own_interpreter(overlay, module):
    """Found where this interpreter finds them (a venv, a conda env or a system install: not the
    base interpreter's site-packages, which a --system-site-packages venv would see)."""
    executable, origin = _find(overlay, module)
    assert executable == overlay != sys.executable
    assert origin == importlib.util.find_spec(module).origin


def test_overlay_runs_this_environments_pth_files(overlay):
    """An editable install registers its finder through a .pth file in site-packages: the overlay
    imports llmcomm_tests without PYTHONPATH wherever this environment has it installed."""
    try:
        metadata.distribution("llmcomm_tests")
    except metadata.PackageNotFoundError:
        pytest.skip("llmcomm_tests is not installed here (only on PYTHONPATH)")
    _, origin = _find(overlay, "llmcomm_tests")
    assert origin is not None and origin.endswith("llmcomm_tests/__init__.py")


def test_what_the_overlay_installs_shadows_this_environment(overlay):
    own_site = Path(subprocess.run([overlay, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
    assert (own_site / PTH_NAME).is_file()
    shadow = own_site / "pytest.py"
    shadow.write_text("")
    try:
        assert _find(overlay, "pytest")[1] == str(shadow)
    finally:
        shadow.unlink()


def test_the_check_fails_on_a_system_site_packages_venv_made_inside_a_venv(tmp_path):
    """The trap the overlay avoids: from inside a venv, --system-site-packages exposes the base
    interpreter's packages, not this venv's, so the module check above would fail."""
    if sys.prefix == sys.base_prefix:
        pytest.skip("not running in a venv: --system-site-packages sees this environment")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(tmp_path / "v")], check=True)
    base_pytest = _find(str(tmp_path / "v" / "bin" / "python"), "pytest")[1]
    assert base_pytest != importlib.util.find_spec("pytest").origin
