"""Our own tests.  The SLO plugin is loaded by the root conftest; these tests use pytester for it."""

import os

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def tiny():
    from llmcomm_tests.engine.config import PRESETS

    return PRESETS["tiny"]


# The host anchor (calibration/anchor.py) probes this host once per pytest session: the plugin's
# many pytester sessions here judge against the profile as calibrated, and tests/test_anchor.py
# turns it on where it is the subject.
os.environ.setdefault("LLMCOMM_ANCHOR", "off")
