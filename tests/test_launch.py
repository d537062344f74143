"""scripts/launch.py: a protocol's runs and their dependencies, the local pool, a real single-node SLURM cluster,
one writer per run folder (common/runlock.py), the status report, and the resolved config.yaml of each run."""
import json
import os
import subprocess
import sys

import launch
import pytest
from fixtures import REPO

from common import runlock


def names(runs):
    return [run.name for run in runs]


def test_each_protocol_expands_into_its_runs_and_dependencies():
    env = {"DATASETS": "dtd eurosat", "SEEDS": "1 2"}
    runs = launch.expand("base2new", ["CoOp"], "", env)
    assert names(runs) == ["CoOp.train_base.dtd.seed1", "CoOp.test_new.dtd.seed1", "CoOp.train_base.dtd.seed2",
                           "CoOp.test_new.dtd.seed2", "CoOp.train_base.eurosat.seed1", "CoOp.test_new.eurosat.seed1",
                           "CoOp.train_base.eurosat.seed2", "CoOp.test_new.eurosat.seed2"]
    assert runs[1].needs == ["CoOp.train_base.dtd.seed1"] and runs[0].needs == []
    assert runs[1].command(["OPTIM.LR", "0.1"]) == ["bash", "scripts/base2new_test.sh", "dtd", "1", "CoOp", "--",
                                                    "OPTIM.LR", "0.1"]
    xd = launch.expand("xd", ["MaPLe"], "cfg", {"SEEDS": "1"})
    assert xd[0].name == "MaPLe.xd_source.seed1" and xd[0].args == ["1", "MaPLe", "cfg"]
    assert [run.args[0] for run in xd[1:]] == launch.XD_TARGETS["imagenet"]
    assert all(run.needs == ["MaPLe.xd_source.seed1"] for run in xd[1:])
    dg = launch.expand("dg", ["CoOp"], "", {"SEEDS": "1", "XD_SOURCE": "world"})
    assert [run.args[0] for run in dg[1:]] == ["world_sketch", "world_mosaic", "world_neon"]
    fewshot = launch.expand("fewshot", ["CoOp", "KgCoOp"], "", {"DATASETS": "dtd", "SEEDS": "1", "SHOTS_LIST": "1 4"})
    assert [(run.name, run.env) for run in fewshot] == [
        ("CoOp.fewshot.dtd.1shots.seed1", {"SHOTS": "1"}), ("CoOp.fewshot.dtd.4shots.seed1", {"SHOTS": "4"}),
        ("KgCoOp.fewshot.dtd.1shots.seed1", {"SHOTS": "1"}), ("KgCoOp.fewshot.dtd.4shots.seed1", {"SHOTS": "4"})]
    with pytest.raises(launch.LaunchError, match="XD_SOURCE must be imagenet or world"):
        launch.expand("xd", ["CoOp"], "", {"XD_SOURCE": "mars"})


def test_cpu_workers_share_the_cores_and_gpus_get_one_run_each(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    args = launch.build_parser().parse_args(["base2new", "--workers", "4"])
    assert launch.worker_slots(args) == [{"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}] * 4
    args = launch.build_parser().parse_args(["base2new", "--gpus", "0,3"])
    assert launch.worker_slots(args) == [{"CUDA_VISIBLE_DEVICES": "0"}, {"CUDA_VISIBLE_DEVICES": "3"}]


def test_a_requeued_slurm_job_runs_the_same_command_again():
    job = launch.ScriptJob(["bash", "scripts/base2new_train.sh", "dtd", "1"], {"SHOTS": "4"})
    again = job.checkpoint()  # what submitit requeues on a time limit or preemption
    assert again.function.command == job.command and again.function.env == job.env


def test_the_lock_names_its_holder_and_is_released_when_the_holder_dies(tmp_path):
    folder = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", f"import sys, time; sys.path.insert(0, {REPO!r}); "
                               f"from common import runlock; lock = runlock.acquire({str(folder)!r}); "
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(runlock.RunLocked, match=f"is being written by process {holder.pid} on "):
        runlock.acquire(str(folder))
    assert runlock.holder_of(str(folder))["pid"] == holder.pid
    holder.kill()
    holder.wait()
    assert runlock.holder_of(str(folder)) is None  # the OS released it: no stale lock
    lock = runlock.acquire(str(folder))
    assert runlock.holder_of(str(folder)) is not None and not folder.exists()  # the folder itself is never touched
    lock.close()



@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    return {**os.environ, "DATA": str(root / "data"), "OUTPUT": str(root / "output"), "SHOTS": "2",
            "DATASETS": "world_shapes", "SEEDS": "1"}


QUICK = ["--", "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0"]


def launch_command(args, env):
    return subprocess.run([sys.executable, "scripts/launch.py", *args], cwd=REPO, env=env, capture_output=True,
                          text=True)


@pytest.mark.integration
def test_local_pool_runs_a_protocol_in_dependency_order_and_skips_finished_runs(world):
    result = launch_command(["base2new", "--trainers", "ZeroshotCLIP", "CoOp", "--workers", "2", *QUICK], world)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 finished (of 4 runs)" in result.stdout
    output = world["OUTPUT"]
    common = "world_shapes/shots_2/CoOp/world/seed1"
    train = json.load(open(os.path.join(output, "base2new/train_base", common, "results.json")))
    test = json.load(open(os.path.join(output, "base2new/test_new", common, "results.json")))
    assert test["model_dir"] == train["output_dir"]  # the test loaded the finished training run
    # Each run folder holds its resolved config, loadable with --config-file.
    from trainers.config import get_cfg_default, merge_file

    cfg = get_cfg_default()
    merge_file(cfg, os.path.join(output, "base2new/train_base", common, "config.yaml"))
    assert (cfg.TRAINER.NAME, cfg.OPTIM.MAX_EPOCH, cfg.DATASET.NUM_SHOTS) == ("CoOp", 1, 2)
    status = launch_command(["base2new", "--trainers", "ZeroshotCLIP", "CoOp", "--status", *QUICK], world)
    assert "4 finished, 0 running, 0 failed, 0 blocked, 0 pending (of 4 runs)" in status.stdout
    again = launch_command(["base2new", "--trainers", "ZeroshotCLIP", "CoOp", *QUICK], world)
    assert again.returncode == 0 and "4 finished (of 4 runs)" in again.stdout


@pytest.mark.integration
def test_a_held_run_is_left_alone_and_a_failed_run_blocks_its_dependants(world):
    env = {**world, "SEEDS": "2"}
    folder = os.path.join(world["OUTPUT"], "base2new/train_base/world_shapes/shots_2/CoOp/world/seed2")
    lock = runlock.acquire(folder)  # as if another process were training this run
    try:
        direct = subprocess.run(["bash", "scripts/base2new_train.sh", "world_shapes", "2", "CoOp", *QUICK], cwd=REPO,
                                env=env, capture_output=True, text=True)
        assert direct.returncode == runlock.LOCKED_EXIT_STATUS
        assert f"is being written by process {os.getpid()}" in direct.stderr
        assert not os.path.exists(folder) or os.listdir(folder) == []  # nothing read or written there
        status = launch_command(["base2new", "CoOp", "--status", *QUICK], env)
        assert f"running   CoOp.train_base.world_shapes.seed2  (process {os.getpid()}" in status.stdout
    finally:
        lock.close()
    bad = launch_command(["base2new", "CoOp", "--", "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0",
                          "OPTIM.LR", "-1"], env)
    assert bad.returncode == 1
    assert "1 failed, 1 blocked (of 2 runs)" in bad.stdout and "OPTIM.LR" in bad.stderr
    status = launch_command(["base2new", "CoOp", "--status", "--", "OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0",
                             "OPTIM.LR", "-1"], env)
    assert "failed    CoOp.train_base.world_shapes.seed2" in status.stdout and "last error: error:" in status.stdout
    assert "blocked   CoOp.test_new.world_shapes.seed2" in status.stdout


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "INSTALL": "1", "SLURMCTLD_PORT": "6917", "SLURMD_PORT": "6918"}
    started = subprocess.run(["bash", "scripts/slurm_localhost.sh", "start", str(state)], cwd=REPO, env=env,
                             capture_output=True, text=True)
    if started.returncode == 3:
        pytest.skip(f"no single-node SLURM here: {started.stderr.strip()}")
    assert started.returncode == 0, started.stderr
    yield str(state / "slurm.conf")
    subprocess.run(["bash", "scripts/slurm_localhost.sh", "stop", str(state)], cwd=REPO)


@pytest.mark.integration
def test_slurm_backend_runs_the_protocol_as_jobs_with_dependencies(world, slurm):
    pytest.importorskip("submitit")
    env = {**world, "SEEDS": "3", "SLURM_CONF": slurm}
    result = launch_command(["base2new", "CoOp", "--backend", "slurm", "--cpus-per-run", "1", "--mem-gb", "1",
                             "--time", "10", "--wait", *QUICK], env)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = json.load(open(os.path.join(world["OUTPUT"], "launch", "base2new", "slurm_jobs.json")))
    train, test = jobs["CoOp.train_base.world_shapes.seed3"], jobs["CoOp.test_new.world_shapes.seed3"]
    assert f"submitted CoOp.test_new.world_shapes.seed3: job {test} after {train}" in result.stdout
    common = "world_shapes/shots_2/CoOp/world/seed3"
    for phase in ("train_base", "test_new"):
        assert os.path.isfile(os.path.join(world["OUTPUT"], "base2new", phase, common, "results.json"))
    again = launch_command(["base2new", "CoOp", "--backend", "slurm", "--wait", *QUICK], env)
    assert again.returncode == 0 and "submitted" not in again.stdout  # finished runs are not submitted again


@pytest.mark.integration
def test_a_trainer_that_wraps_its_model_in_data_parallel_is_refused():
    import torch

    import train
    from trainers.config import ConfigError

    class Wrapped:
        model = torch.nn.DataParallel(torch.nn.Linear(2, 2))

    class Plain:
        model = torch.nn.Linear(2, 2)

    train.check_one_device(Plain(), "CoOp")
    with pytest.raises(ConfigError, match="Mine wrapped its model in DataParallel.*one device"):
        train.check_one_device(Wrapped(), "Mine")
