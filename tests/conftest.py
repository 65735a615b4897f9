"""Our own tests.  The SLO plugin is loaded by the root conftest; these tests use pytester for it."""

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def tiny():
    from llmcomm_tests.engine.config import PRESETS

    return PRESETS["tiny"]
