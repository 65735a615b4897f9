# The llmcomm plugin registers itself through its pytest11 entry point when the package is
# installed; from a bare checkout (not installed) load it here instead.
import importlib.metadata

if not any(ep.value == "llmcomm_tests.suite.plugin" for ep in importlib.metadata.entry_points(group="pytest11")):
    pytest_plugins = ["llmcomm_tests.suite.plugin"]
