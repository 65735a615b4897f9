"""pytest plugin: YAML SLO specs become tests (hooks only; the work lives in the other modules)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "llmcomm: an llmcomm-tests SLO case")
