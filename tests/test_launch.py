"""scripts/launch.py: a protocol's runs and their dependencies, the local pool, a real single-node SLURM cluster,
one writer per run folder (common/runlock.py), the status report, and the resolved config.yaml of each run."""
import json
import os
import signal
import subprocess
import sys
import time
import types

import launch
import pytest
from fixtures import REPO
from launch_fixtures import QUICK, launch_command, records

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


def test_a_user_choice_of_threads_wins_and_one_worker_keeps_every_core(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert launch.worker_slots(launch.build_parser().parse_args(["base2new"])) == [{}]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert launch.worker_slots(launch.build_parser().parse_args(["base2new", "--workers", "2"])) == [{}, {}]


@pytest.mark.parametrize("argv, message", [(["--workers", "0"], "--workers must be 1 or more; got 0"),
                                           (["--gpus", "0,1", "--workers", "2"], "--workers is for the CPU")])
def test_a_pool_that_cannot_run_is_refused(argv, message):
    with pytest.raises(launch.LaunchError, match=message):
        launch.execute([], [], {}, None, launch.build_parser().parse_args(["base2new", *argv]))


def test_slurm_jobs_use_the_cpus_they_ask_for_and_get_the_chosen_environment(monkeypatch, tmp_path):
    """The localhost cluster binds no CPUs (``TaskPlugin=task/none``), nor do many clusters: a job's torch would
    otherwise start one thread per core of the node. A job gets the scripts' variables, not the whole shell."""
    submitted = []

    class Executor:
        def __init__(self, folder, cluster, **params):
            self.defaults = params

        def update_parameters(self, **params):
            self.params = params

        def submit(self, job):
            submitted.append(({**self.defaults, **self.params}, job))
            folder = tmp_path / str(len(submitted))
            paths = types.SimpleNamespace(stderr=folder / "err", result_pickle=folder / "result.pkl")
            return types.SimpleNamespace(job_id=str(len(submitted)), paths=paths)

    monkeypatch.setitem(sys.modules, "submitit", types.SimpleNamespace(AutoExecutor=Executor))
    monkeypatch.setattr(launch, "check_request", lambda args: "debug")
    monkeypatch.setattr(launch, "slurm_jobs", lambda ids: {})
    monkeypatch.setattr(launch.Ledger, "adopt_unrecorded_jobs", lambda self, runs: None)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    args = launch.build_parser().parse_args(["base2new", "--backend", "slurm", "--cpus-per-run", "3",
                                             "--max-requeues", "5", "--signal-lead", "120", "--env", "MINE",
                                             "--sbatch", "reservation=r1", "--sbatch", "hold", "--qos", "low"])
    runs = launch.expand("base2new", ["CoOp"], "", {"DATASETS": "dtd", "SEEDS": "1"})
    for run in runs:
        run.dir = str(tmp_path / run.name)
    monkeypatch.setattr(launch.Ledger, "code_snapshot", lambda self: ("/snapshot", "abc1234"))
    env = {"DATA": "d", "OUTPUT": "/out", "MINE": "x", "CUDA_VISIBLE_DEVICES": "7", "TMPDIR": "/scratch"}
    launch.run_slurm(runs, [], env, launch.Ledger(str(tmp_path), "base2new"), args)
    assert [params["cpus_per_task"] for params, _ in submitted] == [3, 3]
    assert [job.env for _, job in submitted] == [{"DATA": os.path.join(REPO, "d"), "OUTPUT": "/out", "MINE": "x",
                                                  "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3"}] * 2
    assert [job.cwd for _, job in submitted] == ["/snapshot"] * 2  # jobs run the launch's code snapshot
    assert submitted[0][1].dropped["CUDA_VISIBLE_DEVICES"] == "7"  # the shell's value is dropped in the job
    params = submitted[1][0]
    assert params["slurm_additional_parameters"] == {"reservation": "r1", "hold": True, "qos": "low",
                                                     "dependency": "afterok:1", "kill-on-invalid-dep": "yes"}
    assert (params["slurm_max_num_timeout"], params["slurm_signal_delay_s"]) == (5, 120)


def test_a_job_s_script_gets_the_chosen_variables_and_what_the_job_itself_set(monkeypatch, tmp_path):
    seen = tmp_path / "env.json"
    job = launch.ScriptJob([sys.executable, "-c", f"import json, os; json.dump(dict(os.environ), open({str(seen)!r}, 'w'))"],
                           {"DATA": "d"}, str(tmp_path), {"CUDA_VISIBLE_DEVICES": "7", "TMPDIR": "/shell"})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")  # copied from the submitting shell by sbatch: dropped
    monkeypatch.setenv("TMPDIR", "/job")  # set in the job (a --setup line, SLURM): kept
    job()
    got = json.loads(seen.read_text())
    assert got["DATA"] == "d" and got["TMPDIR"] == "/job" and "CUDA_VISIBLE_DEVICES" not in got


def test_a_job_s_script_outlives_slurm_s_time_limit_warning_which_is_submitit_s_to_handle(tmp_path):
    """SLURM signals every process of a job before its time limit; the script must not die of it before submitit's
    handler requeues the job (nor hide, once out of requeues, that the time limit ended it)."""
    script = "kill -USR2 $$; sleep 0.2; echo survived > out"  # bash dies of SIGUSR2 unless it was ignored at start
    before = signal.getsignal(signal.SIGUSR2)
    launch.ScriptJob(["bash", "-c", script], {}, str(tmp_path))()
    assert (tmp_path / "out").read_text() == "survived\n"
    assert signal.getsignal(signal.SIGUSR2) is before  # ignored in the script only, not in the job's own process


@pytest.mark.parametrize("slow_start", [False, True])
def test_when_submitit_requeues_a_job_its_script_and_what_the_script_started_end(tmp_path, monkeypatch, slow_start):
    """submitit's handler requeues the job and exits, from wherever the job's process is when SLURM's warning comes;
    a run left going on would write into the folder of its requeued job. Here the script starts a process, then
    signals the job's process as SLURM does; the handler exits as submitit's does after requeuing. ``slow_start``:
    the warning comes while the job's process is still starting the script (it is held back until the script is
    known, then ends it)."""
    if slow_start:
        class SlowPopen(subprocess.Popen):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                time.sleep(2)  # the script runs, and signals, meanwhile

        monkeypatch.setattr(launch.subprocess, "Popen", SlowPopen)
    script = "(sleep 20; echo > finished) & echo $! > child; kill -USR2 $PPID; wait"

    def requeue_and_exit(signum, frame):
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, requeue_and_exit)
    try:
        with pytest.raises(SystemExit):
            launch.ScriptJob(["bash", "-c", script], {}, str(tmp_path))()
    finally:
        signal.signal(signal.SIGUSR2, previous)
    child = int((tmp_path / "child").read_text())
    deadline = time.time() + 60
    while alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(child) and not (tmp_path / "finished").exists()  # ended, not left to finish


def alive(pid):
    """Whether ``pid`` runs (a zombie that no one has reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_run_stopped_by_its_time_limit_too_often_says_to_raise_the_time(tmp_path):
    log = tmp_path / "err"
    log.write_text("submitit.core.utils.UncompletedJobError: Job not requeued because: timed-out too many times.\n"
                   "srun: error: vm: task 0: Exited with exit code 1\n")
    line = launch.last_error_line(str(log))
    assert line.startswith("submitit.core.utils.UncompletedJobError") and "hint: raise --time" in line


def test_a_launch_asks_the_registry_once_per_question_and_gets_the_same_folders(tmp_path):
    """Each run's script asks the trainer registry for its config (a Python start that imports torch); a launch
    shares the answers (``REGISTRY_CACHE``), so a 300-run sweep does not wait minutes before its first run."""
    calls = tmp_path / "calls.txt"
    counting_python = tmp_path / "python"
    counting_python.write_text(f'#!/bin/bash\necho "$*" >> {calls}\nexec {sys.executable} "$@"\n')
    counting_python.chmod(0o755)
    env = {**os.environ, "OUTPUT": str(tmp_path / "out"), "PYTHON": str(counting_python),
           "DATASETS": "dtd", "SEEDS": "1 2"}

    def folders(env):
        runs = launch.expand("base2new", ["CoOp", "MaPLe"], "", env)
        launch.resolve_dirs(runs, [], env)
        return [run.dir for run in runs]

    uncached = folders(env)
    assert len(calls.read_text().splitlines()) == 8  # 2 trainers x 2 seeds x (train, test)
    calls.unlink()
    ledger = launch.Ledger(str(tmp_path / "out"), "base2new")
    ledger.share_registry_answers(env)
    assert folders(env) == uncached
    # one question per trainer (and dataset): its first run asks it before the others start
    assert len(calls.read_text().splitlines()) == 2
    assert uncached[0].endswith("base2new/train_base/dtd/shots_16/CoOp/vit_b16_ctxv1/seed1")
    assert uncached[-1].endswith("base2new/test_new/dtd/shots_16/MaPLe/vit_b16_c2_ep5_batch4_2ctx/seed2")
    ledger.share_registry_answers(env)  # the next launch starts empty: no answer outlives its launch
    assert os.path.getsize(env["REGISTRY_CACHE"]) == 0


def test_a_question_the_registry_refuses_is_not_kept_and_its_message_comes_through(tmp_path):
    cache = tmp_path / "answers.tsv"
    ask = 'source scripts/common.sh; cached_registry config NoSuchTrainer base2new dtd --shots 16 --name ""'
    done = subprocess.run(["bash", "-c", ask], cwd=REPO, env={**os.environ, "REGISTRY_CACHE": str(cache)},
                          capture_output=True, text=True)
    assert done.returncode != 0 and "NoSuchTrainer" in done.stderr
    assert not cache.exists() or cache.read_text() == ""


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


@pytest.mark.integration
def test_local_pool_of_two_workers_gives_the_records_of_sequential_runs(world, sequential):
    result = launch_command(["base2new", "CoOp", "--workers", "2", *QUICK], world)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8 finished (of 8 runs)" in result.stdout
    assert records(world["OUTPUT"]) == sequential
    common = "world_shapes/shots_2/CoOp/world/seed1"
    train = json.load(open(os.path.join(world["OUTPUT"], "base2new/train_base", common, "results.json")))
    test = json.load(open(os.path.join(world["OUTPUT"], "base2new/test_new", common, "results.json")))
    assert test["model_dir"] == train["output_dir"]  # the test loaded the finished training run
    # Each run folder holds its resolved config, loadable with --config-file.
    from trainers.config import get_cfg_default, merge_file

    cfg = get_cfg_default()
    merge_file(cfg, os.path.join(world["OUTPUT"], "base2new/train_base", common, "config.yaml"))
    assert (cfg.TRAINER.NAME, cfg.OPTIM.MAX_EPOCH, cfg.DATASET.NUM_SHOTS) == ("CoOp", 1, 2)
    again = launch_command(["base2new", "CoOp", *QUICK], world)
    assert again.returncode == 0 and "8 finished (of 8 runs)" in again.stdout  # nothing is run twice


@pytest.mark.integration
def test_two_processes_for_one_run_one_trains_the_other_names_it_and_leaves(world):
    import signal
    import time

    env = {**world, "OUTPUT": world["OUTPUT"] + "_lock"}
    command = ["bash", "scripts/base2new_train.sh", "world_shapes", "1", "CoOp", "--", "OPTIM.MAX_EPOCH", "20",
               "OPTIM.WARMUP_EPOCH", "0"]
    folder = os.path.join(env["OUTPUT"], "base2new/train_base/world_shapes/shots_2/CoOp/world/seed1")
    first = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while runlock.holder_of(folder) is None:  # until the first one holds the run
        assert first.poll() is None
        time.sleep(0.05)
    holder = runlock.holder_of(folder)
    os.kill(holder["pid"], signal.SIGSTOP)  # it holds the run until the second one has tried, however slow that is
    try:
        second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    finally:
        os.kill(holder["pid"], signal.SIGCONT)
    assert second.returncode == runlock.LOCKED_EXIT_STATUS, second.stdout[-2000:]
    assert holder["pid"] != first.pid and f"is being written by process {holder['pid']}" in second.stderr
    assert first.wait() == 0
    with open(os.path.join(folder, "log.txt")) as handle:  # one writer: the log holds one run, not two
        assert handle.read().count("** Config **") == 1


@pytest.mark.integration
def test_a_killed_run_releases_its_lock_and_resumes(world):
    import signal
    import time

    env = {**world, "OUTPUT": world["OUTPUT"] + "_killed"}
    command = ["bash", "scripts/base2new_train.sh", "world_shapes", "2", "CoOp", "--", "OPTIM.MAX_EPOCH", "100",
               "OPTIM.WARMUP_EPOCH", "0"]
    folder = os.path.join(env["OUTPUT"], "base2new/train_base/world_shapes/shots_2/CoOp/world/seed2")
    run = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    pointer = os.path.join(folder, "prompt_learner", "checkpoint")  # names the newest checkpoint once there is one
    while not os.path.exists(pointer):
        assert run.poll() is None
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    deadline = time.time() + 30  # train.py, in the same process group, is gone a moment after the shell
    while runlock.holder_of(folder) is not None and time.time() < deadline:
        time.sleep(0.1)
    assert runlock.holder_of(folder) is None and not os.path.exists(os.path.join(folder, "results.json"))
    again = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    import glob

    logs = "".join(open(path).read() for path in glob.glob(os.path.join(folder, "log.txt*")))  # Dassl: one per run
    assert "Resumed from" in logs and "model.pth.tar-" in logs
    assert json.load(open(os.path.join(folder, "results.json")))["epoch"] == 100


@pytest.mark.integration
def test_status_reports_held_failed_blocked_and_missing_runs(world):
    env = {**world, "OUTPUT": world["OUTPUT"] + "_status", "DATASETS": "world_shapes", "SEEDS": "3 4"}
    folder = os.path.join(env["OUTPUT"], "base2new/train_base/world_shapes/shots_2/CoOp/world/seed4")
    lock = runlock.acquire(folder)  # as if another process were training this run
    try:
        direct = subprocess.run(["bash", "scripts/base2new_train.sh", "world_shapes", "4", "CoOp", *QUICK], cwd=REPO,
                                env=env, capture_output=True, text=True)
        assert direct.returncode == runlock.LOCKED_EXIT_STATUS
        assert f"is being written by process {os.getpid()}" in direct.stderr
        assert not os.path.exists(folder) or os.listdir(folder) == []  # nothing read or written there
        bad = [*QUICK, "OPTIM.LR", "-1.0"]  # seed 3 fails (a value train.py refuses); seed 4 is held
        failed = launch_command(["base2new", "CoOp", *bad], env)
        assert failed.returncode == 1 and "OPTIM.LR" in failed.stderr
        status = launch_command(["base2new", "CoOp", "--status", *bad], env)
    finally:
        lock.close()
    out = status.stdout
    assert status.returncode == 1  # not every run finished
    assert "failed      CoOp.train_base.world_shapes.seed3" in out and "last error: error:" in out
    assert "blocked     CoOp.test_new.world_shapes.seed3  (by CoOp.train_base.world_shapes.seed3 (failed))" in out
    assert f"running     CoOp.train_base.world_shapes.seed4  (process {os.getpid()}" in out
    assert "not started CoOp.test_new.world_shapes.seed4" in out
    assert "0 finished, 1 running, 1 failed, 1 blocked, 1 not started (of 4 runs)" in out
    assert "next: rerun the same launch command" in out


@pytest.mark.integration
def test_a_launch_that_finds_a_run_written_by_another_process_does_not_say_all_is_well(world):
    """Two launches at once: the second leaves the first one's run to it and cannot start that run's test; it says
    so and exits non-zero, without the tables hint."""
    env = {**world, "OUTPUT": world["OUTPUT"] + "_busy", "DATASETS": "world_shapes", "SEEDS": "6"}
    folder = os.path.join(env["OUTPUT"], "base2new/train_base/world_shapes/shots_2/CoOp/world/seed6")
    lock = runlock.acquire(folder)
    try:
        result = launch_command(["base2new", "CoOp", *QUICK], env)
    finally:
        lock.close()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 finished, 1 running, 1 blocked (of 2 runs)" in result.stdout and "Tables" not in result.stdout
    assert "blocked     CoOp.test_new.world_shapes.seed6  (by CoOp.train_base.world_shapes.seed6 (running))" in \
        result.stderr


@pytest.mark.integration
def test_a_dry_run_refuses_a_mistyped_override_and_a_status_keeps_the_launch_s_registry_answers(world):
    env = {**world, "OUTPUT": world["OUTPUT"] + "_dry", "DATASETS": "world_shapes", "SEEDS": "1"}
    dry = launch_command(["base2new", "CoOp", "--dry-run", "--", "OPTIM.MAX_EPOCHS", "1"], env)
    assert dry.returncode == 2 and "Traceback" not in dry.stderr
    assert dry.stderr.startswith("error: the overrides after --:") and "OPTIM.MAX_EPOCH" in dry.stderr
    assert len(dry.stderr.strip().splitlines()) == 1
    answers = os.path.join(env["OUTPUT"], "launch", "base2new", "registry_answers.tsv")
    os.makedirs(os.path.dirname(answers), exist_ok=True)
    with open(answers, "w") as handle:
        handle.write("a running launch's answer\n")
    status = launch_command(["base2new", "CoOp", "--status", *QUICK], env)
    assert "not started CoOp.train_base.world_shapes.seed1" in status.stdout, status.stderr
    assert open(answers).read() == "a running launch's answer\n"
    assert os.listdir(os.path.dirname(answers)) == ["registry_answers.tsv", "logs"] or \
        sorted(os.listdir(os.path.dirname(answers))) == ["logs", "registry_answers.tsv"]  # its own answers removed


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
