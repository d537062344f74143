import importlib.util
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "scripts"))  # the scripts' modules (tables, suite, sweep, benchmark, ...)

from shared_run import run_scratch  # noqa: E402

# the launcher's fixtures (world, sequential, slurm), used by its test files
pytest_plugins = ("launch_fixtures",)

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
    """DATA and OUTPUT shared by the tests that run the scripts on the generated world. DATA is the test run's:
    the world's images are generated once (a dataset appears whole, by rename, whoever generates it, so workers can
    share it). OUTPUT is this worker's: a run one test made (same command, same overrides) is found finished by the
    next test in the same worker; no two workers' runs ever meet in one run folder."""
    data = run_scratch(tmp_path_factory) / "world_data"
    return {"DATA": str(data), "OUTPUT": str(tmp_path_factory.mktemp("world") / "output")}


# The test files that take longest (a shared cluster, trained fixtures), run first: pytest.ini hands whole files to
# the workers in collection order, and a long file handed out last would keep one worker busy after the others end.
LONGEST_FIRST = ("test_launch_slurm.py", "test_launch_slurm_interruptions.py", "test_integration_protocols.py",
                 "test_launch.py", "test_integration_world.py", "test_doc_commands.py", "test_ivlp_promptsrc.py",
                 "test_integration_train.py", "test_integration_reliability.py", "test_integration_dualmiprompt.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order
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
