"""The fixtures and helpers of the launcher's tests (tests/test_launch.py, tests/test_launch_slurm.py): the world
they run on, the sequential runs every backend must reproduce, and the single-node SLURM cluster."""
import json
import os
import subprocess
import sys

import pytest
from fixtures import REPO
from shared_run import made_once


@pytest.fixture(scope="module")
def world(tmp_path_factory, world_env):
    root = tmp_path_factory.mktemp("launch")
    # One torch thread everywhere: the sequential scripts, the pool's workers and the SLURM jobs compute alike.
    # The datasets are the test run's (generated once); the runs are this module's.
    return {**os.environ, "DATA": world_env["DATA"], "OUTPUT": str(root / "output"), "SHOTS": "2",
            "DATASETS": "world_shapes world_counts", "SEEDS": "1 2", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


QUICK = ["--", "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0"]
RUNS = [f"{phase}/{dataset}/shots_2/CoOp/world/seed{seed}" for phase in ("train_base", "test_new")
        for dataset in ("world_shapes", "world_counts") for seed in (1, 2)]


def launch_command(args, env):
    return subprocess.run([sys.executable, "scripts/launch.py", *args], cwd=REPO, env=env, capture_output=True,
                          text=True)


def records(output):
    """Every record of the tiny protocol without the fields that differ between two runs of one command."""
    from trainers.records import VOLATILE_FIELDS

    found = {}
    for run in RUNS:
        with open(os.path.join(output, "base2new", run, "results.json")) as handle:
            found[run] = {k: v for k, v in json.load(handle).items() if k not in VOLATILE_FIELDS}
    return found


@pytest.fixture(scope="module")
def sequential(tmp_path_factory, world):
    """The same protocol through the bash script, one run after another: what the launcher must reproduce (made
    once per test run, for both test files)."""

    def make(folder):
        env = {**world, "OUTPUT": os.path.join(folder, "output")}
        done = subprocess.run(["bash", "scripts/base2new.sh", "CoOp", *QUICK], cwd=REPO, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return records(env["OUTPUT"])

    return made_once(tmp_path_factory, "launch_sequential", make)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    import socket

    state = tmp_path_factory.mktemp("slurm")
    ports = []
    for _ in range(2):  # free ports: another cluster on this machine (another test session's) keeps its own
        with socket.socket() as probe:
            probe.bind(("", 0))
            ports.append(str(probe.getsockname()[1]))
    # a node that stops answering is marked down after 30 s instead of 60 (the node-down test waits for it)
    env = {**os.environ, "SLURMCTLD_PORT": ports[0], "SLURMD_PORT": ports[1], "SLURMD_TIMEOUT": "30"}
    started = subprocess.run(["bash", "scripts/slurm_localhost.sh", "start", str(state)], cwd=REPO, env=env,
                             capture_output=True, text=True)
    if started.returncode == 3:
        pytest.skip(f"no single-node SLURM here (bash scripts/setup.sh --with-slurm installs it): "
                    f"{started.stderr.strip()}")
    assert started.returncode == 0, started.stderr
    yield str(state / "slurm.conf")
    subprocess.run(["bash", "scripts/slurm_localhost.sh", "stop", str(state)], cwd=REPO)


def job_history(output):
    """The launch's job history: every submission, in order."""
    with open(os.path.join(output, "launch", "base2new", "slurm_jobs.jsonl")) as handle:
        return [json.loads(line) for line in handle]


SLURM_SMALL = ["--backend", "slurm", "--cpus-per-run", "1", "--mem-gb", "1", "--time", "10"]

