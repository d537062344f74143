import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

HAVE_DASSL = importlib.util.find_spec("dassl") is not None
if HAVE_DASSL:
    import trainers  # noqa: F401,E402  (neutralises Dassl's import side effects before any test imports it)


def pytest_collection_modifyitems(config, items):
    if HAVE_DASSL:
        return
    skip = pytest.mark.skip(reason="Dassl is not importable")
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    if not HAVE_DASSL:
        terminalreporter.write_line(
            "Dassl is not importable: the integration tests were skipped (run scripts/setup.sh to install it)."
        )
