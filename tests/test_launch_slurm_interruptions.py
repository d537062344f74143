"""scripts/launch.py on a real single-node SLURM cluster (scripts/slurm_localhost.sh) when jobs are interrupted:
a requeue, a time limit, a node that goes down. Apart from tests/test_launch_slurm.py so that the two files, each
with its own cluster, run beside each other: these tests mostly wait for SLURM."""
import json
import os
import re
import subprocess
import sys

import pytest
from fixtures import REPO
from launch_fixtures import QUICK, SLURM_SMALL, job_history, launch_command


@pytest.mark.integration
def test_a_requeued_slurm_job_resumes_its_run_from_the_last_checkpoint(world, slurm):
    """``scontrol requeue`` does to a running job what preemption does: SLURM kills it and queues it again. The
    job runs its script again, which resumes from the run's last checkpoint; its dependant waits for it."""
    import glob
    import time

    pytest.importorskip("submitit")
    env = {**world, "OUTPUT": world["OUTPUT"] + "_requeue", "SLURM_CONF": slurm, "DATASETS": "world_shapes",
           "SEEDS": "3"}
    long = ["--", "OPTIM.MAX_EPOCH", "100", "OPTIM.WARMUP_EPOCH", "0"]
    submitted = launch_command(["base2new", "CoOp", "--backend", "slurm", "--cpus-per-run", "1", "--mem-gb", "1",
                                "--time", "10", *long], env)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    jobs = {record["run"]: record["job"] for record in job_history(env["OUTPUT"])}
    train_job = jobs["CoOp.train_base.world_shapes.seed3"]
    common = "world_shapes/shots_2/CoOp/world/seed3"
    folder = os.path.join(env["OUTPUT"], "base2new/train_base", common)
    pointer = os.path.join(folder, "prompt_learner", "checkpoint")  # names the newest checkpoint once there is one
    deadline = time.time() + 300
    while not os.path.exists(pointer):
        assert time.time() < deadline, "the training job wrote no checkpoint in 300 s"
        time.sleep(0.05)
    requeued = subprocess.run(["scontrol", "requeue", train_job], env=env, capture_output=True, text=True)
    assert requeued.returncode == 0, requeued.stderr
    status = launch_command(["base2new", "CoOp", "--status", *long], env)  # neither failed nor blocked
    assert status.returncode == 1
    assert re.search(rf"(requeued|running) +CoOp.train_base.world_shapes.seed3  \(job {train_job}, .*attempt 2",
                     status.stdout), status.stdout
    assert re.search(r"queued +CoOp.test_new.world_shapes.seed3", status.stdout), status.stdout
    # the launch started again waits for the requeued job and counts it finished once it has
    waited = launch_command(["base2new", "CoOp", "--backend", "slurm", "--cpus-per-run", "1", "--mem-gb", "1",
                             "--time", "10", "--wait", *long], env)
    assert waited.returncode == 0, waited.stdout + waited.stderr
    assert "2 finished (of 2 runs)" in waited.stdout and "submitted" not in waited.stdout
    assert len(job_history(env["OUTPUT"])) == 2
    result = os.path.join(env["OUTPUT"], "base2new/test_new", common, "results.json")
    shown = subprocess.run(["scontrol", "show", "job", train_job], env=env, capture_output=True, text=True).stdout
    assert "Restarts=1" in shown
    logs = "".join(open(path).read() for path in glob.glob(os.path.join(folder, "log.txt*")))  # Dassl: one per run
    assert "Resumed from" in logs and "model.pth.tar-" in logs
    assert json.load(open(os.path.join(folder, "results.json")))["epoch"] == 100
    assert json.load(open(result))["model_dir"] == folder


@pytest.mark.integration
def test_wait_stops_with_a_message_when_the_node_is_down_and_a_restart_brings_the_jobs_back(world, slurm):
    """slurmd stopped: its node stops answering and is marked down; --wait says so instead of waiting forever, and
    the cluster restarted with its queue runs the jobs the launch submitted."""
    pytest.importorskip("submitit")
    env = {**world, "OUTPUT": world["OUTPUT"] + "_nodedown", "SLURM_CONF": slurm, "DATASETS": "world_shapes",
           "SEEDS": "9"}
    state = os.path.dirname(slurm)
    with open(os.path.join(state, "slurmd.pid")) as handle:
        os.kill(int(handle.read()), 15)
    try:
        waited = subprocess.run([sys.executable, "scripts/launch.py", "base2new", "CoOp", *SLURM_SMALL, "--wait",
                                 *QUICK], cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
        assert waited.returncode == 1, waited.stdout + waited.stderr
        assert "every node of partition 'debug' is down" in waited.stderr or \
            "cannot start, SLURM says" in waited.stderr, waited.stderr
    finally:
        restarted = subprocess.run(["bash", "scripts/slurm_localhost.sh", "restart", state], cwd=REPO,
                                   capture_output=True, text=True)
    assert restarted.returncode == 0, restarted.stderr
    done = launch_command(["base2new", "CoOp", *SLURM_SMALL, "--wait", *QUICK], env)
    assert done.returncode == 0 and "2 finished (of 2 runs)" in done.stdout, done.stdout + done.stderr
    assert len(job_history(env["OUTPUT"])) == 2  # the jobs submitted before the restart ran; none twice


@pytest.mark.integration
def test_a_run_that_keeps_hitting_its_time_limit_fails_with_the_hint_to_raise_the_time(world, slurm):
    """submitit requeues a job signalled before its time limit at most --max-requeues times; then the run fails,
    and the report says why and what to change."""
    pytest.importorskip("submitit")
    env = {**world, "OUTPUT": world["OUTPUT"] + "_timeout", "SLURM_CONF": slurm, "DATASETS": "world_shapes",
           "SEEDS": "13"}
    # SLURM checks time limits every 30 s: the warning comes 10 to 40 s after each start, after submitit has set its
    # handler and before the time limit
    long = ["--", "OPTIM.MAX_EPOCH", "50000", "OPTIM.WARMUP_EPOCH", "0"]  # far more than 2 attempts of < 1 min train
    done = subprocess.run([sys.executable, "scripts/launch.py", "base2new", "CoOp", "--backend", "slurm",
                           "--cpus-per-run", "1", "--mem-gb", "1", "--time", "1", "--signal-lead", "20",
                           "--max-requeues", "1", "--wait", *long], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=500)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "failed      CoOp.train_base.world_shapes.seed13" in done.stderr, done.stderr
    assert "timed-out too many times" in done.stderr and "hint: raise --time" in done.stderr, done.stderr
    assert "blocked     CoOp.test_new.world_shapes.seed13" in done.stderr
