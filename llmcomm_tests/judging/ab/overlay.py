"""A second environment over the running one's packages: arm B of an A/B comparison with one
package changed, or an A/A check with a distinct interpreter path.

    python -m llmcomm_tests.judging.ab.overlay .venvs/arm-b      # prints .venvs/arm-b/bin/python
    .venvs/arm-b/bin/python -m pip install "numpy==2.3.5"         # shadows the running env's numpy

Why not ``python -m venv --system-site-packages``: that flag exposes the *base* interpreter's
site-packages.  Run from inside a venv, the new env then misses everything the venv installed
(torch, this package).  Instead the new venv gets one ``.pth`` file that adds every site folder of
the running interpreter (venv, conda env or system install alike) with ``site.addsitedir``, so the
``.pth`` files inside those folders run too (editable installs register their finders that way).
The new venv's own site-packages comes first, so what is installed there shadows the running env.
"""

from __future__ import annotations

import argparse
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

PTH_NAME = "llmcomm-overlay.pth"


def running_site_dirs() -> list[str]:
    """The running interpreter's site folders that exist, in its import order, without repeats."""
    candidates = list(site.getsitepackages())
    if site.ENABLE_USER_SITE:
        candidates.append(site.getusersitepackages())
    candidates += [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    on_path = [str(Path(p).resolve()) for p in sys.path if p]
    found = {str(Path(p).resolve()) for p in candidates if p and Path(p).is_dir()}
    ordered = [p for p in on_path if p in found]
    ordered += sorted(found - set(ordered))
    return list(dict.fromkeys(ordered))


def overlay_pth_text(site_dirs: list[str]) -> str:
    """One ``import`` line (``.pth`` files run lines that start with ``import``): plain path lines
    would add the folders but not process the ``.pth`` files inside them."""
    calls = "; ".join(f"site.addsitedir({d!r})" for d in site_dirs)
    return f"import site; {calls}\n"


def overlay_venv(dest: str | Path) -> str:
    """Create a venv at ``dest`` that sees the running interpreter's packages; return its python."""
    dest = Path(dest).absolute()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(dest)], check=True)
    python = dest / "bin" / "python"
    own_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
    (Path(own_site) / PTH_NAME).write_text(overlay_pth_text(running_site_dirs()))
    return str(python)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmcomm_tests.judging.ab.overlay", description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", help="folder of the new venv")
    print(overlay_venv(parser.parse_args(argv).dest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
