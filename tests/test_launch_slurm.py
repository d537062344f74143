"""scripts/launch.py on a real single-node SLURM cluster (scripts/slurm_localhost.sh): jobs, their dependencies
and history, relaunches, requests SLURM refuses and the code snapshot (interrupted jobs:
tests/test_launch_slurm_interruptions.py)."""
import json
import os
import re
import subprocess
import sys

import pytest
from fixtures import REPO
from launch_fixtures import QUICK, SLURM_SMALL, job_history, launch_command, records


@pytest.mark.integration
def test_slurm_backend_runs_the_protocol_as_jobs_and_gives_the_sequential_records(world, sequential, slurm):
    pytest.importorskip("submitit")
    env = {**world, "OUTPUT": world["OUTPUT"] + "_slurm", "SLURM_CONF": slurm}
    result = launch_command(["base2new", "CoOp", "--backend", "slurm", "--cpus-per-run", "1", "--mem-gb", "1",
                             "--time", "10", "--wait", *QUICK], env)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = {record["run"]: record["job"] for record in job_history(env["OUTPUT"])}
    assert len(jobs) == 8
    train, test = jobs["CoOp.train_base.world_shapes.seed1"], jobs["CoOp.test_new.world_shapes.seed1"]
    assert f"submitted CoOp.test_new.world_shapes.seed1: job {test} after {train}" in result.stdout
    assert records(env["OUTPUT"]) == sequential
    again = launch_command(["base2new", "CoOp", "--backend", "slurm", "--cpus-per-run", "1", "--mem-gb", "1", "--wait",
                            *QUICK], env)
    assert again.returncode == 0 and "submitted" not in again.stdout  # finished runs are not submitted again
    assert len(job_history(env["OUTPUT"])) == 8


@pytest.mark.integration
def test_the_suite_runs_as_slurm_jobs_and_a_failed_run_s_test_is_reported_not_awaited(world, sequential, slurm,
                                                                                      tmp_path):
    """Through scripts/suite.py the job class comes from an imported module, which the job's interpreter cannot
    import unless the class travels by value; a training run that fails gets its new-class test cancelled by
    SLURM, which leaves no result and, on a cluster without accounting, no state for submitit to read."""
    pytest.importorskip("submitit")
    env = {**world, "OUTPUT": world["OUTPUT"] + "_suite_slurm", "SLURM_CONF": slurm}
    os.makedirs(os.path.join(world["DATA"], "world_signs", "junk"), exist_ok=True)  # not a generated dataset
    result = subprocess.run([sys.executable, "scripts/suite.py", "--trainers", "CoOp", "--datasets", "world_shapes",
                             "world_counts", "world_signs", "--seeds", "1", "2", "--out", str(tmp_path),
                             "--backend", "slurm", "--cpus-per-run", "1", "--mem-gb", "1", "--time", "10", *QUICK],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 1, result.stdout + result.stderr
    (runs,) = [os.path.join(env["OUTPUT"], name) for name in os.listdir(env["OUTPUT"]) if name.startswith("overrides_")]
    assert records(runs) == sequential
    jobs = {record["run"]: record for record in job_history(runs)}
    for seed in (1, 2):
        train = jobs[f"CoOp.train_base.world_signs.seed{seed}"]
        assert re.search(rf"CoOp.train_base.world_signs.seed{seed}: FAILED \(job {train['job']}[^)]*\), see "
                         rf"{re.escape(train['log'])}", result.stdout), result.stdout
        assert "not a generated world dataset" in open(train["log"]).read()
    assert json.loads((tmp_path / "suite.json").read_text())["trainers"]["CoOp"]["datasets"]["world_counts"]["seeds"] == [1, 2]


@pytest.mark.integration
def test_a_slurm_relaunch_keeps_queued_jobs_reports_cancelled_ones_and_never_evaluates_twice(world, slurm):
    """The launcher started again while its jobs wait submits nothing twice; a job that cannot start stops --wait
    with what to do; a cancelled job is reported cancelled (not pending), its dependant blocked by it, and the next
    launch submits both again, the test after the new training job."""
    pytest.importorskip("submitit")
    env = {**world, "OUTPUT": world["OUTPUT"] + "_relaunch", "SLURM_CONF": slurm, "DATASETS": "world_shapes",
           "SEEDS": "7"}
    held = [*SLURM_SMALL, "--sbatch", "hold"]  # jobs that wait in the queue until released
    first = launch_command(["base2new", "CoOp", *held, *QUICK], env)
    assert first.returncode == 0, first.stdout + first.stderr  # submitted and queued: the launch did its work
    (train, test) = job_history(env["OUTPUT"])
    assert test["after"] == [train["job"]]
    again = launch_command(["base2new", "CoOp", *held, "--wait", *QUICK], env)
    assert "submitted" not in again.stdout and len(job_history(env["OUTPUT"])) == 2
    assert f"kept CoOp.train_base.world_shapes.seed7: queued (job {train['job']}, pending: JobHeldUser)" in again.stdout
    assert again.returncode == 1 and f"job {train['job']} cannot start, SLURM says JobHeldUser" in again.stderr \
        or f"job {test['job']} cannot start" in again.stderr, again.stderr  # --wait stops instead of waiting forever
    subprocess.run(["scancel", train["job"]], env=env, check=True)
    status = launch_command(["base2new", "CoOp", "--status", *QUICK], env)
    assert status.returncode == 1
    assert f"cancelled   CoOp.train_base.world_shapes.seed7  (job {train['job']} left the queue" in status.stdout
    assert re.search(r"(blocked|cancelled|queued) +CoOp.test_new.world_shapes.seed7", status.stdout), status.stdout
    assert "next: rerun the same launch command" in status.stdout
    done = launch_command(["base2new", "CoOp", *SLURM_SMALL, "--wait", *QUICK], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 finished (of 2 runs)" in done.stdout
    history = job_history(env["OUTPUT"])
    assert len(history) == 4 and history[3]["after"] == [history[2]["job"]]  # the test waits for the live job
    assert not subprocess.run(["squeue", "-h", "-j", test["job"], "-t", "PD,R"], env=env, capture_output=True,
                              text=True).stdout.strip()  # the old test job does not run later
    folder = os.path.join(env["OUTPUT"], "base2new/test_new/world_shapes/shots_2/CoOp/world/seed7")
    assert [name for name in os.listdir(folder) if name.startswith("results")] == ["results.json"]
    # a second process that passed the script's check before the first finished: under the lock it sees the record
    late = subprocess.run([sys.executable, "train.py", "--root", env["DATA"], "--seed", "7", "--trainer", "CoOp",
                           "--dataset-config-file", "configs/datasets/world_shapes.yaml", "--config-file",
                           "configs/trainers/CoOp/world.yaml", "--output-dir", folder, "--unless-finished",
                           "--eval-only", "--model-dir", folder.replace("test_new", "train_base"),
                           "DATASET.NUM_SHOTS", "2", "DATASET.SUBSAMPLE_CLASSES", "new"], cwd=REPO, env=env,
                          capture_output=True, text=True)
    assert late.returncode == 0 and "finished by another process; skipped" in late.stdout, late.stderr
    assert [name for name in os.listdir(folder) if name.startswith("results")] == ["results.json"]
    last = launch_command(["base2new", "CoOp", *SLURM_SMALL, "--wait", *QUICK], env)
    assert last.returncode == 0 and "submitted" not in last.stdout and len(job_history(env["OUTPUT"])) == 4


@pytest.mark.integration
@pytest.mark.parametrize("request_, message", [
    (["--cpus-per-run", "4096"], r"^error: --cpus-per-run 4096: the nodes of partition 'debug' have at most \d+ CPUs"),
    (["--mem-gb", "100000"], r"^error: --mem-gb 100000: the nodes of partition 'debug' have at most \d+ MB"),
    (["--partition", "gpu"], r"^error: no partition 'gpu' on this cluster \(sinfo lists: debug\)"),
    (["--gpus-per-run", "1"], r"^error: --gpus-per-run 1: the nodes of partition 'debug' have no GPUs"),
    (["--time", "1"], r"^error: --time 1 \(minutes\) leaves no time to run: submitit signals a job 90 s before"),
    (["--sbatch", "no-such-option=1"], r"^error: sbatch refused CoOp.train_base.world_shapes.seed8: .*no-such-option"),
])
def test_a_slurm_request_that_cannot_run_is_one_line_naming_the_limit(world, slurm, request_, message):
    pytest.importorskip("submitit")
    env = {**world, "OUTPUT": world["OUTPUT"] + "_requests", "SLURM_CONF": slurm, "DATASETS": "world_shapes",
           "SEEDS": "8"}
    args = [*SLURM_SMALL, *request_]
    refused = launch_command(["base2new", "CoOp", *args, *QUICK], env)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert re.search(message, refused.stderr), refused.stderr
    assert not os.path.exists(os.path.join(env["OUTPUT"], "launch", "base2new", "slurm_jobs.jsonl"))


@pytest.mark.integration
def test_a_restart_of_the_localhost_cluster_keeps_its_queue(slurm):
    env = {**os.environ, "SLURM_CONF": slurm}
    held = subprocess.run(["sbatch", "--parsable", "--hold", "--wrap", "true"], env=env, capture_output=True, text=True)
    assert held.returncode == 0, held.stderr
    job = held.stdout.strip().split(";")[0]
    state = os.path.dirname(slurm)
    try:
        restarted = subprocess.run(["bash", "scripts/slurm_localhost.sh", "restart", state], cwd=REPO,
                                   capture_output=True, text=True)
        assert restarted.returncode == 0, restarted.stderr
        assert restarted.stdout.strip() == f"export SLURM_CONF={slurm}"
        listed = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T %r"], env=env, capture_output=True, text=True)
        assert listed.stdout.strip() == "PENDING JobHeldUser", listed.stdout + listed.stderr
    finally:
        subprocess.run(["scancel", job], env=env)


@pytest.mark.integration
def test_slurm_jobs_run_the_code_snapshot_of_their_launch(world, slurm):
    """The checkout may change while jobs wait: a job runs the copy of the code its launch made (recorded in the
    job history), not whatever the checkout holds when it starts."""
    pytest.importorskip("submitit")
    env = {**world, "OUTPUT": world["OUTPUT"] + "_snapshot", "SLURM_CONF": slurm, "DATASETS": "world_shapes",
           "SEEDS": "10"}
    held = launch_command(["base2new", "CoOp", *SLURM_SMALL, "--sbatch", "hold", *QUICK], env)
    assert held.returncode == 0, held.stdout + held.stderr
    train, test = job_history(env["OUTPUT"])
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    assert train["code"] == test["code"] and train["commit"].startswith(head.strip())
    assert os.path.dirname(train["code"]) == os.path.join(env["OUTPUT"], "launch", "base2new", "code")
    # what an edit of the code after the launch would do, done to the snapshot instead of the checkout
    with open(os.path.join(train["code"], "scripts", "common.sh"), "a") as handle:
        handle.write('echo "ran from the snapshot" >&2\n')
    subprocess.run(["scontrol", "release", f"{train['job']},{test['job']}"], env=env, check=True)
    done = launch_command(["base2new", "CoOp", *SLURM_SMALL, "--wait", *QUICK], env)
    assert done.returncode == 0 and "2 finished (of 2 runs)" in done.stdout, done.stdout + done.stderr
    assert "ran from the snapshot" in open(train["log"]).read()
    assert len(job_history(env["OUTPUT"])) == 2


@pytest.mark.integration
def test_a_relaunch_keeps_a_test_job_whose_training_has_just_finished(world, slurm):
    """The training run has its results while its test job still waits in the queue for the training job (SLURM
    lets it start a moment later): a launch started then keeps the test job; it neither cancels it nor submits
    the test a second time."""
    pytest.importorskip("submitit")
    env = {**world, "OUTPUT": world["OUTPUT"] + "_justfinished", "SLURM_CONF": slurm, "DATASETS": "world_shapes",
           "SEEDS": "12"}
    held = launch_command(["base2new", "CoOp", *SLURM_SMALL, "--sbatch", "hold", *QUICK], env)
    assert held.returncode == 0, held.stdout + held.stderr
    train, test = job_history(env["OUTPUT"])
    try:
        finished = os.path.join(env["OUTPUT"], "base2new/train_base/world_shapes/shots_2/CoOp/world/seed12")
        os.makedirs(finished)
        with open(os.path.join(finished, "results.json"), "w") as handle:  # as the training job writes it last
            json.dump({"accuracy": 50.0}, handle)
        again = launch_command(["base2new", "CoOp", *SLURM_SMALL, "--sbatch", "hold", *QUICK], env)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "kept CoOp.test_new.world_shapes.seed12: queued" in again.stdout, again.stdout
        assert "cancelled" not in again.stdout and "submitted" not in again.stdout, again.stdout
        assert len(job_history(env["OUTPUT"])) == 2
    finally:
        subprocess.run(["scancel", train["job"], test["job"]], env=env)


@pytest.mark.integration
def test_max_running_puts_the_launch_s_jobs_in_lanes(world, slurm):
    """``--max-running 1``: each job also waits for the end (any end) of the job submitted before it, so that at most
    one of the launch's jobs runs at a time, whatever its own dependencies."""
    pytest.importorskip("submitit")
    env = {**world, "OUTPUT": world["OUTPUT"] + "_lanes", "SLURM_CONF": slurm, "DATASETS": "world_shapes",
           "SEEDS": "11 12"}
    held = launch_command(["base2new", "CoOp", *SLURM_SMALL, "--sbatch", "hold", "--max-running", "1", *QUICK], env)
    assert held.returncode == 0, held.stdout + held.stderr
    jobs = [record["job"] for record in job_history(env["OUTPUT"])]
    try:
        # a launch killed after sbatch answered and before it wrote the history: its jobs are found, not doubled
        history = os.path.join(env["OUTPUT"], "launch", "base2new", "slurm_jobs.jsonl")
        os.rename(history, history + ".before")
        again = launch_command(["base2new", "CoOp", *SLURM_SMALL, "--sbatch", "hold", *QUICK], env)
        assert again.returncode == 0 and "submitted" not in again.stdout, again.stdout + again.stderr
        assert sorted(record["job"] for record in job_history(env["OUTPUT"])) == sorted(jobs)
        assert f"kept CoOp.test_new.world_shapes.seed12: queued (job {jobs[3]}" in again.stdout
        shown = [subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
                 for job in jobs]
        assert "Dependency=(null)" in shown[0]
        assert re.search(rf"Dependency=afterok:{jobs[0]}(\(unfulfilled\))?,afterany:{jobs[0]}", shown[1]), shown[1]
        assert re.search(rf"Dependency=afterany:{jobs[1]}", shown[2]), shown[2]  # the next seed's training
        assert re.search(rf"Dependency=afterok:{jobs[2]}(\(unfulfilled\))?,afterany:{jobs[2]}", shown[3]), shown[3]
    finally:
        subprocess.run(["scancel", *jobs], env=env)


@pytest.mark.integration
def test_stop_leaves_munged_to_the_clusters_still_running(slurm, tmp_path):
    """``stop`` ends the munged its ``start`` started, unless another cluster's daemon on this machine still needs
    it (here the one the tests run on)."""
    sleeper = subprocess.Popen(["sleep", "300"])  # stands for the munged this state's start started
    try:
        (tmp_path / "munged.pid").write_text(f"{sleeper.pid}\n")
        stopped = subprocess.run(["bash", "scripts/slurm_localhost.sh", "stop", str(tmp_path)], cwd=REPO,
                                 capture_output=True, text=True)
        assert stopped.returncode == 0, stopped.stderr
        assert "munged left running: another SLURM daemon on this machine uses it" in stopped.stderr
        assert sleeper.poll() is None and not (tmp_path / "munged.pid").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
