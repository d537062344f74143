import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))  # the scripts' modules (tables, suite, sweep, benchmark, ...)

HAVE_DASSL = importlib.util.find_spec("dassl") is not None
if HAVE_DASSL:
    # Dassl without its import side effects, then every trainer and dataset registered, before any test runs.
    from common.dassl_env import import_dassl  # noqa: E402

    import_dassl()
    import datasets  # noqa: E402
    from trainers import registry  # noqa: E402

    registry.register_with_dassl()
    datasets.register_with_dassl()


@pytest.fixture(scope="session")
def world_env(tmp_path_factory):
    """DATA and OUTPUT shared by the tests that run the scripts on the generated world: its images are generated
    once, and a run one test made (same command, same overrides) is found finished by the next."""
    root = tmp_path_factory.mktemp("world")
    return {"DATA": str(root / "data"), "OUTPUT": str(root / "output")}


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
