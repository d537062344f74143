"""Run a whole protocol across the GPUs (or CPU workers) of a machine, or as SLURM jobs, with its dependencies.

    python3 scripts/launch.py base2new CoOp --gpus 0,1,2,3            # one run per GPU at a time
    python3 scripts/launch.py base2new --trainers CoOp DualMIPrompt --workers 2   # CPU: two runs at a time
    DATASETS="dtd eurosat" SEEDS="1 2" python3 scripts/launch.py xd CoOp -- OPTIM.MAX_EPOCH 10
    python3 scripts/launch.py base2new CoOp --backend slurm --partition gpu --time 240 --gpus-per-run 1 --wait
    python3 scripts/launch.py base2new CoOp --status                 # finished / queued / running / failed / ...

Each run is one call of a protocol's one-run script (``scripts/base2new_train.sh DATASET SEED TRAINER [CONFIG] --
KEY VALUE ...`` and the others), with the scripts' conventions: DATA, OUTPUT, DATASETS, SEEDS, SHOTS (SHOTS_LIST for
fewshot), XD_SOURCE, TRAINER and CONFIG; ``--trainers`` runs several trainers (the suite's comparison). A run
starts when the run it needs has finished (the new-class test after its training run; every cross-dataset target
after the source run). A finished run (its ``results.json`` exists) is skipped, a run that stopped resumes from its
last checkpoint, and a run being written by another process (its lock is held: ``common/runlock.py``) is left to it.

Local backend: ``--gpus 0,1`` runs one run per listed GPU at a time (``CUDA_VISIBLE_DEVICES``), ``--workers N`` runs N
at a time on the CPU with the cores shared out between them (``OMP_NUM_THREADS``, unless set). SLURM backend: one job
per run through submitit, dependencies as ``afterok`` dependencies, and a run killed by its time limit or by
preemption requeued to resume from its last checkpoint. Every submission is appended to the job history
(``slurm_jobs.jsonl``); the same command run again keeps the runs whose jobs are queued or running and submits the
others, and ``--status`` / ``--wait`` ask SLURM (squeue, sacct) where each run's job stands.
The logs are in ``$OUTPUT/launch/<protocol>/logs/``.
The suite (``scripts/suite.py``) and the sweep (``scripts/sweep.py``) run their runs through ``execute`` and take the
same backend options.
"""
import argparse
import atexit
import concurrent.futures
import contextlib
import fcntl
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common import runlock  # noqa: E402
from common.fileio import atomic_write_text  # noqa: E402

PROTOCOLS = ("base2new", "xd", "dg", "fewshot")
BENCHMARK_DATASETS = ("imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd "
                      "eurosat ucf101").split()
XD_TARGETS = {"imagenet": ("caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd "
                           "eurosat ucf101").split(),
              "world": "world_shapes world_textures world_counts world_signs".split()}
DG_TARGETS = {"imagenet": "imagenetv2 imagenet_sketch imagenet_a imagenet_r".split(),
              "world": "world_sketch world_mosaic world_neon".split()}
STATES = ("finished", "running", "queued", "requeued", "failed", "cancelled", "blocked", "busy", "not started",
          "unknown")
LIVE = ("running", "queued", "requeued")  # a run some process or job is still working on
# The variables a SLURM job's script gets from the launch (with --env's): the scripts' conventions, the Python and
# the trainer plug-ins to use, and what a process needs to start.
JOB_VARIABLES = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "DATA", "OUTPUT", "SHOTS", "XD_SOURCE", "PYTHON",
                 "PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX", "REGISTRY_CACHE", "TRAINER_PLUGINS",
                 "DUALMI_ENV_INFO", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


class LaunchError(ValueError):
    """A command line the launcher cannot run; the message says what to change."""


@dataclass
class Run:
    name: str  # unique within the protocol, also the log's name
    script: str  # scripts/<script>
    args: list  # the script's positional arguments
    env: dict = field(default_factory=dict)  # extra environment (SHOTS for few-shot runs)
    needs: list = field(default_factory=list)  # names of the runs that must finish first
    dir: str = ""  # its output folder, as the script computes it
    opts: list = field(default_factory=list)  # overrides of this run alone, after the launch's own
    trainer: str = ""
    dataset: str = ""  # "" for a cross-dataset source run
    seed: str = ""

    def command(self, opts):
        opts = [*opts, *self.opts]
        return ["bash", f"scripts/{self.script}", *self.args, *(["--", *opts] if opts else [])]


# ----------------------------------------------------------------------------------------------- the runs
def expand(protocol, trainers, config, env):
    """The runs of ``protocol`` for each trainer, with their dependencies, in the order the bash scripts run them."""
    seeds = env.get("SEEDS", "1 2 3").split()
    runs = []
    for trainer in trainers:
        tail = [trainer, *([config] if config else [])]
        if protocol == "base2new":
            for dataset in env.get("DATASETS", " ".join(BENCHMARK_DATASETS)).split():
                for seed in seeds:
                    cell = {"trainer": trainer, "dataset": dataset, "seed": seed}
                    train = Run(f"{trainer}.train_base.{dataset}.seed{seed}", "base2new_train.sh", [dataset, seed, *tail],
                                **cell)
                    runs += [train, Run(f"{trainer}.test_new.{dataset}.seed{seed}", "base2new_test.sh",
                                        [dataset, seed, *tail], needs=[train.name], **cell)]
        elif protocol in ("xd", "dg"):
            source = env.get("XD_SOURCE", "imagenet")
            if source not in XD_TARGETS:
                raise LaunchError(f"XD_SOURCE must be imagenet or world; got {source!r}")
            default = XD_TARGETS[source] if protocol == "xd" else DG_TARGETS[source]
            for seed in seeds:
                train = Run(f"{trainer}.xd_source.seed{seed}", "xd_train.sh", [seed, *tail], trainer=trainer, seed=seed)
                runs.append(train)
                for dataset in env.get("DATASETS", " ".join(default)).split():
                    runs.append(Run(f"{trainer}.xd_target.{dataset}.seed{seed}", "xd_test.sh", [dataset, seed, *tail],
                                    needs=[train.name], trainer=trainer, dataset=dataset, seed=seed))
        elif protocol == "fewshot":
            for dataset in env.get("DATASETS", " ".join(BENCHMARK_DATASETS)).split():
                for shots in env.get("SHOTS_LIST", "1 2 4 8 16").split():
                    for seed in seeds:
                        runs.append(Run(f"{trainer}.fewshot.{dataset}.{shots}shots.seed{seed}", "fewshot_train.sh",
                                        [dataset, seed, *tail], env={"SHOTS": shots}, trainer=trainer, dataset=dataset,
                                        seed=seed))
        else:
            raise LaunchError(f"unknown protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
    return runs


def check_overrides(opts, env):
    """Refuse an override that names no config key or gives a value of the wrong type before any run starts (each
    run would fail on it alone): the same check as train.py's, on the toolbox's whole config."""
    check = ("import sys; from trainers.config import ConfigError, get_cfg_default, merge_overrides\n"
             "try:\n    merge_overrides(get_cfg_default(), sys.argv[1:])\n"
             "except ConfigError as error:\n    sys.exit(' '.join(str(error).split()))")
    done = subprocess.run([env.get("PYTHON", sys.executable), "-c", check, *opts], cwd=REPO, capture_output=True,
                          text=True, env=env)
    if done.returncode != 0:
        raise LaunchError(f"the overrides after --: {(done.stderr.strip().splitlines() or ['refused'])[-1]}")


def resolve_dirs(runs, opts, env):
    """Ask each run's script where it writes (``PRINT_RUN_DIR=1``); a run the script refuses is an error here."""
    def ask(run):
        result = subprocess.run(run.command(opts), cwd=REPO, capture_output=True, text=True,
                                env={**env, **run.env, "PRINT_RUN_DIR": "1"})
        if result.returncode != 0 or not result.stdout.strip():
            raise LaunchError(f"{run.name}: {shlex.join(run.command(opts))} refused: "
                              f"{(result.stderr.strip().splitlines() or ['no output'])[-1]}")
        path = result.stdout.strip().splitlines()[-1]
        return path if os.path.isabs(path) else os.path.join(REPO, path)

    # The first run of each (trainer, dataset, shots) is asked first: the runs that follow ask its script's question
    # to the trainer registry again and find the answer cached (REGISTRY_CACHE) instead of racing it.
    firsts = {}
    for run in runs:
        firsts.setdefault((run.trainer, run.dataset, run.env.get("SHOTS")), run)
    rest = [run for run in runs if all(run is not first for first in firsts.values())]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        for batch in (list(firsts.values()), rest):
            for run, path in zip(batch, pool.map(ask, batch)):
                run.dir = path


# ----------------------------------------------------------------------------------------------- state
def commit_of(folder):
    """The checkout's commit, with "+changes" when its files differ from it (untracked ones included), or ""
    outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=folder, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=folder, capture_output=True, text=True)
    except OSError:
        return ""
    return head.stdout.strip() + ("+changes" if dirty.stdout.strip() else "") if head.returncode == 0 else ""


class Ledger:
    """Where the launcher keeps the logs of its runs and what it knows of their ends."""

    def __init__(self, output, protocol):
        self.folder = os.path.join(output, "launch", protocol)
        self.logs = os.path.join(self.folder, "logs")
        os.makedirs(self.logs, exist_ok=True)

    def share_registry_answers(self, env, private=False):
        """Give this launch's runs one cache of the trainer registry's answers (``cached_registry`` in
        scripts/common.sh), emptied here so that no answer outlives the launch that asked it. A ``private`` cache
        (a look at the protocol) is this process's own and removed when it ends."""
        path = os.path.join(self.folder, f"registry_answers.{os.getpid()}.tsv" if private else "registry_answers.tsv")
        open(path, "w").close()
        if private:
            atexit.register(os.remove, path)
        env["REGISTRY_CACHE"] = path

    def log(self, run):
        return os.path.join(self.logs, f"{run.name}.log")

    @contextlib.contextmanager
    def submitting(self):
        """Hold the launch's lock while it decides what to submit and submits it: a second launch of the protocol
        waits, then finds the first one's jobs in the history and keeps them."""
        with open(os.path.join(self.folder, ".submit.lock"), "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print("another launch of this protocol is submitting; waiting for it", flush=True)
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def history_path(self):
        return os.path.join(self.folder, "slurm_jobs.jsonl")

    def history(self):
        """The last job submitted for each run, by run name, from the job history: one line per submission,
        appended and never rewritten."""
        last = {}
        try:
            with open(self.history_path()) as handle:
                for line in handle:
                    try:
                        record = json.loads(line)
                        last[record["run"]] = record
                    except (ValueError, KeyError, TypeError):
                        continue  # a line cut short by a launch killed while writing it
        except FileNotFoundError:
            pass
        return last

    def code_snapshot(self):
        """``(folder, commit)``: a copy of the checkout's files (the tracked ones and the untracked ones git does not
        ignore) for this launch's jobs, so that a job runs the code that was launched whatever the checkout holds
        when it starts. A clean checkout's copy is shared by the launches of its commit; outside git the jobs run
        the checkout itself."""
        commit = commit_of(REPO)
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True)
        if not commit or listed.returncode != 0:
            return REPO, commit
        name = f"{commit}-{time.strftime('%Y%m%d-%H%M%S')}" if commit.endswith("+changes") else commit
        folder = os.path.join(self.folder, "code", name)
        if os.path.isdir(folder):
            return folder, commit
        partial = f"{folder}.partial-{os.getpid()}"  # a launch killed while copying leaves no half copy in use
        for path in filter(None, listed.stdout.decode().split("\0")):
            if os.path.isfile(os.path.join(REPO, path)):  # a tracked file deleted in the checkout stays deleted
                os.makedirs(os.path.dirname(os.path.join(partial, path)), exist_ok=True)
                shutil.copy2(os.path.join(REPO, path), os.path.join(partial, path))
        os.rename(partial, folder)
        return folder, commit

    def adopt_unrecorded_jobs(self, runs):
        """Add to the history the live jobs of this launch folder that it does not name (a launch killed between
        sbatch's answer and its history line), so that they are kept rather than submitted twice."""
        try:
            with open(self.history_path()) as handle:
                recorded = {json.loads(line).get("job") for line in handle if line.strip().endswith("}")}
        except FileNotFoundError:
            recorded = set()
        names, ours, found = {run.name for run in runs}, os.path.join(self.folder, "slurm", ""), {}
        for line in slurm_command(["squeue", "-h", "-O", "JobID:|,Name:|,StdOut:|"]).splitlines():
            job, name, stdout = (field.strip() for field in line.split("|")[:3])
            if name in names and stdout.startswith(ours) and job not in recorded and job.isdigit():
                found[name] = max(found.get(name, job), job, key=int)
        for name, job in found.items():
            folder = os.path.join(self.folder, "slurm", job)
            with open(self.history_path(), "a") as handle:
                handle.write(json.dumps({"run": name, "job": job, "after": [], "adopted": True,
                                         "log": os.path.join(folder, f"{job}_0_log.err"),
                                         "result": os.path.join(folder, f"{job}_0_result.pkl")}) + "\n")
            print(f"found job {job} of {name} in the queue, missing from the job history: recorded")

    def record(self, run, job, after, code):
        record = {"run": run.name, "job": str(job.job_id), "after": after,
                  "submitted": time.strftime("%Y-%m-%d %H:%M:%S"), "code": code[0], "commit": code[1],
                  "log": str(job.paths.stderr), "result": str(job.paths.result_pickle)}
        with open(self.history_path(), "a") as handle:
            handle.write(json.dumps(record) + "\n")
        return record

    def failure_mark(self, run):
        return os.path.join(self.logs, f"{run.name}.failed")

    def mark_failed(self, run, status):
        atomic_write_text(self.failure_mark(run), f"{status}\n")

    def clear(self, run):
        if os.path.exists(self.failure_mark(run)):
            os.remove(self.failure_mark(run))


@dataclass
class Status:
    """Where a run stands: one of STATES, and what says so (its job, node, SLURM's reason, the run it waits on)."""
    state: str
    detail: str = ""
    log: str = ""  # where to read why a run failed


def state_of(run, ledger, states=None, history=None, jobs=None):
    """The run's ``Status``. Its results record says finished; else SLURM, for the last job the launch submitted
    for it (``history``: Ledger.history, ``jobs``: slurm_jobs); else its lock (a process writes it); else the
    launcher's failure mark; else the runs it needs (``states``, by name, in dependency order)."""
    if os.path.isfile(os.path.join(run.dir, "results.json")):
        return Status("finished")
    record = (history or {}).get(run.name)
    job = (jobs or {}).get(record["job"]) if record else None
    if job is not None and job.live():
        return job.status()
    holder = runlock.holder_of(run.dir)
    if holder is not None:
        return Status("running", runlock.describe(holder))
    if record and jobs is None:
        return Status("unknown", f"job {record['job']}: SLURM does not answer")
    bad = [name for name in run.needs if states is not None and name in states
           and states[name].state in ("failed", "cancelled", "blocked", "busy")]
    if record:  # its last job ended without a results record
        if bad:
            return Status("blocked", f"by {bad[0]} ({states[bad[0]].state})")
        if job is not None and job.state == "CANCELLED" or job is None and not os.path.exists(record["result"]):
            return Status("cancelled", f"job {record['job']} left the queue without a result (cancelled or killed)")
        return Status("failed", f"job {record['job']}" + (f" {job.state}" if job else ""), record["log"])
    if os.path.isfile(ledger.failure_mark(run)):
        return Status("failed", "", ledger.log(run))
    if bad:
        return Status("blocked", f"by {bad[0]} ({states[bad[0]].state})")
    return Status("not started")


def last_error_line(path):
    try:
        with open(path, errors="replace") as handle:
            lines = [line.strip() for line in handle.read()[-20000:].splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    # the scripts' and train.py's own message ("error: ..."), else any line that speaks of an error, else the last
    # SLURM's own lines ("srun: error: ... Exited with exit code 1") only echo the end of a job that said why
    ours = [line for line in lines if line.startswith("error:")]
    errors = [line for line in lines if "error" in line.lower()]
    said = [line for line in errors if not line.startswith(("srun:", "slurmstepd"))]
    line = (ours or said or errors or lines or ["(empty log)"])[-1][:200]
    if "timed-out too many times" in line or "DUE TO TIME LIMIT" in line:
        line += "  (hint: raise --time, or --max-requeues; each requeue resumes from the last checkpoint)"
    return line


def assess(runs, ledger, history=None, jobs=None):
    """Every run's Status, by name, in dependency order (a run's needs come before it)."""
    states = {}
    for run in runs:
        states[run.name] = state_of(run, ledger, states, history, jobs)
    return states


def status_line(run, status):
    line = f"{status.state:11s} {run.name}" + (f"  ({status.detail})" if status.detail else "")
    if status.state == "failed":
        line += f"\n            log: {status.log}\n            last error: {last_error_line(status.log)}"
    return line


def counts_line(states, total):
    counts = {state: sum(1 for s in states.values() if s.state == state) for state in STATES}
    return ", ".join(f"{count} {state}" for state, count in counts.items() if count or state == "finished") + \
        f" (of {total} runs)"


def next_step(states):
    """What to do about the runs that did not finish, or "" when every run did."""
    left = {s.state for s in states.values()} - {"finished"}
    if not left:
        return ""
    if left <= set(LIVE):
        return "next: wait for the jobs in the queue (--wait, or --status to look again)"
    return ("next: rerun the same launch command: it keeps the queued and running jobs and starts the failed, "
            "cancelled, blocked and not started runs again" + (" (a busy run once its other writer has ended)"
                                                               if "busy" in left else ""))


def print_status(runs, ledger):
    history = ledger.history()
    try:
        jobs = slurm_jobs(record["job"] for record in history.values())
    except LaunchError as err:
        print(f"warning: {err}; the runs' jobs are reported unknown", file=sys.stderr)
        jobs = None
    states = assess(runs, ledger, history, jobs)
    for run in runs:
        print(status_line(run, states[run.name]))
    print(counts_line(states, len(runs)))
    if next_step(states):
        print(next_step(states))
    return states


# ----------------------------------------------------------------------------------------------- local
def worker_slots(args):
    if args.gpus:
        return [{"CUDA_VISIBLE_DEVICES": gpu} for gpu in args.gpus.split(",")]
    workers = max(1, args.workers)
    return [threads_env(max(1, (os.cpu_count() or 1) // workers)) if workers > 1 else {} for _ in range(workers)]


def threads_env(threads):
    """The threads one run may use, unless the user chose them: several torch processes that each use every core
    slow each other down many times over (spin-waiting)."""
    if "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def run_local(runs, opts, env, ledger, args):
    from tqdm import tqdm

    states = {run.name: state_of(run, ledger).state for run in runs}
    for run in runs:  # a failure from an earlier launch is tried again
        if states[run.name] == "failed":
            ledger.clear(run)
            states[run.name] = "not started"
    by_name = {run.name: run for run in runs}
    free, active, blockers = worker_slots(args), {}, {}
    bar = tqdm(total=len(runs), initial=sum(s == "finished" for s in states.values()), unit="run", file=sys.stdout)
    while True:
        for run in runs:  # a run whose prerequisite failed cannot start
            bad = [n for n in run.needs if states[n] in ("failed", "blocked", "busy", "running")]
            if states[run.name] == "not started" and bad:
                states[run.name], blockers[run.name] = "blocked", f"by {bad[0]} ({states[bad[0]]})"
                bar.update()
        ready = [run for run in runs if states[run.name] == "not started"
                 and all(states[n] == "finished" for n in run.needs)]
        while ready and free:
            run, slot = ready.pop(0), free.pop(0)
            log = open(ledger.log(run), "a")
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(run.command(opts))}\n")
            log.flush()
            process = subprocess.Popen(run.command(opts), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                       env={**env, **run.env, **slot})
            active[run.name] = (process, slot, log)
            states[run.name] = "started"
            bar.set_postfix_str(f"started {run.name}" + (f" on GPU {slot['CUDA_VISIBLE_DEVICES']}"
                                                         if "CUDA_VISIBLE_DEVICES" in slot else ""))
        if not active:
            break
        time.sleep(0.5)
        for name, (process, slot, log) in list(active.items()):
            status = process.poll()
            if status is None:
                continue
            log.close()
            del active[name]
            free.append(slot)
            run = by_name[name]
            if status == 0 and os.path.isfile(os.path.join(run.dir, "results.json")):
                states[name] = "finished"
            elif status == runlock.LOCKED_EXIT_STATUS:
                states[name] = "busy"  # another process writes it; its dependants wait for another launch
            else:
                states[name] = "failed"
                ledger.mark_failed(run, status)
            bar.update()
    bar.close()
    return {run.name: Status(states[run.name], blockers.get(run.name, ""), ledger.log(run)) for run in runs}


# ----------------------------------------------------------------------------------------------- slurm
def _leave_the_requeue_signal_to_submitit():
    """Run in a job's script process before it starts. SLURM sends its time-limit warning (--signal, SIGUSR2 for
    submitit) to every process of the job, the script too, whose default action is to die of it: were the script's
    death seen before submitit's handler ran, the job would fail with it instead of being requeued, or, once out of
    requeues, without saying that the time limit ended it. Ignored here (and so in all the script starts), the
    signal is submitit's alone; ``ScriptJob`` ends the script when submitit requeues or gives up."""
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)


class ScriptJob:
    """What a SLURM job runs: one run's script. On a time limit or preemption submitit calls ``checkpoint``, and the
    job is requeued with the same command, which resumes from the run's last checkpoint.

    The script gets ``env`` (the variables the launch chose for it) over the job's own variables that SLURM or a
    ``--setup`` line set (``PATH``, ``SLURM_*``, the GPUs it was given), never the submitting shell's others."""

    def __init__(self, command, env, cwd=REPO, dropped=None):
        self.command, self.env, self.cwd, self.dropped = command, env, cwd, dropped or {}

    def __call__(self):
        # sbatch copies the submitting shell into the job: its variables that the launch did not choose are dropped
        # unless the job changed them (a --setup line, SLURM's own GPU binding)
        job_env = {key: value for key, value in os.environ.items() if self.dropped.get(key) != value}
        # The script leads a process group of its own, so that all it started (train.py under bash) can be ended at
        # once. submitit's handler may requeue the job (it then exits) or give up on it at any moment, raising here:
        # the run must not go on beside its requeued job, writing into the same folder, outside SLURM's view. A
        # warning that comes while the script starts is held, and handed to submitit's handler once the script is
        # known, where the script is ended. (A signal mask would not do: it holds the signal back from one thread,
        # and the process may have others to take it.)
        held = []
        submitits = signal.signal(signal.SIGUSR2, lambda signum, frame: held.append(signum))
        try:
            script = subprocess.Popen(self.command, cwd=self.cwd, env={**job_env, **self.env}, start_new_session=True,
                                      preexec_fn=_leave_the_requeue_signal_to_submitit)
            try:
                signal.signal(signal.SIGUSR2, submitits)
                if held:
                    signal.raise_signal(signal.SIGUSR2)
                script.wait()
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(script.pid, signal.SIGKILL)
                script.wait()
                raise
        finally:
            signal.signal(signal.SIGUSR2, submitits)
        if script.returncode:
            raise subprocess.CalledProcessError(script.returncode, self.command)

    def checkpoint(self):
        import submitit

        return submitit.helpers.DelayedSubmission(ScriptJob(self.command, self.env, self.cwd, self.dropped))


@dataclass
class Job:
    """What SLURM says of one job."""
    id: str
    state: str  # SLURM's: PENDING, RUNNING, COMPLETED, CANCELLED, FAILED, TIMEOUT, ...
    reason: str = ""
    node: str = ""
    elapsed: str = ""
    restarts: int = 0

    def live(self):
        return self.state in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED",
                              "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "STOPPED", "SIGNALING", "STAGE_OUT")

    def status(self):
        if self.state in ("RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT"):
            attempt = f", attempt {self.restarts + 1}" if self.restarts else ""
            return Status("running", f"job {self.id} on {self.node}, {self.elapsed}{attempt}")
        if self.restarts or self.state.startswith("REQUEUE"):
            return Status("requeued", f"job {self.id}, attempt {self.restarts + 1}, {self.state.lower()}: "
                                      f"{self.reason}")
        return Status("queued", f"job {self.id}, {self.state.lower()}" +
                      (f": {self.reason}" if self.reason not in ("", "None") else ""))


# SLURM's reasons for a pending job that will not start unless someone changes the request or the cluster
NEVER_STARTS = {"PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "PartitionDown", "PartitionInactive",
                "BadConstraints", "InvalidAccount", "InvalidQOS", "NodeDown", "ReqNodeNotAvail",
                "DependencyNeverSatisfied", "JobHeldAdmin", "JobHeldUser", "QOSMaxCpuPerJobLimit",
                "QOSMaxMemoryPerJob", "QOSMaxWallDurationPerJobLimit"}


def slurm_command(command):
    """``command``'s output, or raise LaunchError naming it when SLURM does not answer."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise LaunchError(f"{command[0]} did not answer: {err}") from None
    if done.returncode != 0:
        raise LaunchError(f"{' '.join(command[:2])} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    return done.stdout


def slurm_jobs(ids):
    """What SLURM says of each of ``ids`` it still knows: ``{id: Job}``. ``squeue`` lists the jobs the controller
    holds (the queued and running ones and, for a few minutes after their end, the ended ones); ``sacct`` answers
    for older ones where the cluster keeps accounting (submitit asks only sacct, which waits forever where none is
    kept, as on the localhost cluster of scripts/slurm_localhost.sh)."""
    ids = set(ids)
    if not ids:
        return {}
    found = {}
    listing = slurm_command(["squeue", "-h", "--states=all", "-O",
                             "JobID:|,State:|,Reason:|,NodeList:|,TimeUsed:|,RestartCnt:"])
    for line in listing.splitlines():
        fields = [field.strip() for field in line.split("|")]
        if len(fields) >= 6 and fields[0] in ids:
            found[fields[0]] = Job(fields[0], fields[1], fields[2], fields[3], fields[4],
                                   int(fields[5]) if fields[5].isdigit() else 0)
    missing = sorted(ids - set(found))
    if missing:
        try:
            accounting = slurm_command(["sacct", "-n", "-P", "-X", "-j", ",".join(missing), "-o",
                                        "JobID,State,NodeList,Elapsed"])
        except LaunchError:  # no accounting kept: the job is gone from SLURM's memory
            accounting = ""
        for line in accounting.splitlines():
            fields = line.split("|")
            if len(fields) == 4 and fields[0] in ids:
                found[fields[0]] = Job(fields[0], fields[1].split()[0], "", fields[2], fields[3])
    return found


def partitions():
    """``{partition: {"default", "cpus", "mem_mb", "gres", "time", "nodes_up"}}`` from ``sinfo``; each limit is the
    largest over the partition's nodes."""
    found = {}
    for line in slurm_command(["sinfo", "-h", "-N", "-o", "%P|%c|%m|%G|%l|%t"]).splitlines():
        name, cpus, mem, gres, limit, node_state = line.split("|")
        part = found.setdefault(name.rstrip("*"), {"default": name.endswith("*"), "cpus": 0, "mem_mb": 0,
                                                   "gres": set(), "time": limit, "nodes_up": 0})
        part["cpus"] = max(part["cpus"], int(cpus.rstrip("+")))
        part["mem_mb"] = max(part["mem_mb"], int(mem.rstrip("+")))
        part["gres"] |= {g for g in gres.split(",") if g and g != "(null)"}
        usable = not node_state.endswith(("*", "~", "#", "!", "%", "$", "@")) and \
            node_state.rstrip("*~#!%$@^-") not in ("down", "drain", "drained", "draining", "fail", "failing", "unk",
                                                   "inval", "maint", "power_down", "powered_down", "boot")
        part["nodes_up"] += usable
    return found


def minutes(limit):
    """SLURM's ``[days-]hours:minutes:seconds`` (or ``infinite``) in minutes."""
    if limit in ("infinite", "UNLIMITED", "n/a"):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    parts = [0] * (3 - len(parts)) + parts if len(parts) < 3 else parts
    return int(days or 0) * 1440 + parts[0] * 60 + parts[1] + (parts[2] > 0)


def check_request(args):
    """Refuse, in one line naming the limit, a request no node of the partition can ever run (it would wait in the
    queue forever, ``PartitionConfig``), or one whose time limit leaves no time before submitit's signal."""
    if args.max_running < 0:
        raise LaunchError(f"--max-running must be 0 (no cap) or more; got {args.max_running}")
    if args.time * 60 <= args.signal_lead:
        raise LaunchError(f"--time {args.time} (minutes) leaves no time to run: submitit signals a job "
                          f"{args.signal_lead} s before its limit to requeue it (--signal-lead); raise --time")
    found = partitions()
    name = args.partition or next((n for n, p in found.items() if p["default"]), "")
    if name not in found:
        raise LaunchError(f"no partition {name!r} on this cluster (sinfo lists: {', '.join(sorted(found))}); "
                          "choose one with --partition" if name else "this cluster has no default partition: "
                          f"choose one with --partition ({', '.join(sorted(found))})")
    part, where = found[name], f"partition {name!r}"
    if args.cpus_per_run > part["cpus"]:
        raise LaunchError(f"--cpus-per-run {args.cpus_per_run}: the nodes of {where} have at most {part['cpus']} "
                          f"CPUs; ask for {part['cpus']} or fewer")
    if args.mem_gb * 1024 > part["mem_mb"]:
        raise LaunchError(f"--mem-gb {args.mem_gb}: the nodes of {where} have at most {part['mem_mb']} MB; ask for "
                          f"{part['mem_mb'] // 1024} or fewer")
    if args.gpus_per_run and not any(g.startswith("gpu") for g in part["gres"]):
        raise LaunchError(f"--gpus-per-run {args.gpus_per_run}: the nodes of {where} have no GPUs (gres: "
                          f"{', '.join(sorted(part['gres'])) or 'none'}); choose a GPU partition with --partition")
    limit = minutes(part["time"])
    if limit is not None and args.time > limit:
        raise LaunchError(f"--time {args.time}: {where} allows at most {limit} minutes a job")
    if not part["nodes_up"]:
        raise LaunchError(f"every node of {where} is down or drained (sinfo -p {name}); a job would never start")
    return name


def job_environment(env, runs_env, args):
    """The variables a job's script gets: the scripts' conventions and the launch's choices (``--env``), not the
    whole submitting shell (an exported ``CUDA_VISIBLE_DEVICES`` or ``TMPDIR`` has no place on another node)."""
    chosen = {key: env[key] for key in (*JOB_VARIABLES, *args.env) if key in env}
    chosen = {**chosen, **runs_env, **threads_env(args.cpus_per_run)}
    # the job runs in the launch's code snapshot: the scripts' folders relative to the checkout are made absolute
    for key, default in (("DATA", "./data"), ("OUTPUT", "output")):
        chosen[key] = os.path.normpath(os.path.join(REPO, chosen.get(key, default)))
    return chosen


def run_slurm(runs, opts, env, ledger, args):
    try:
        import submitit
    except ImportError:
        raise LaunchError("the slurm backend needs submitit: pip install submitit") from None
    if ScriptJob.__module__ != "__main__":
        # The job's interpreter cannot import this script (scripts/ is no package): send the class itself.
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[ScriptJob.__module__])
    partition = check_request(args)
    executor = submitit.AutoExecutor(folder=os.path.join(ledger.folder, "slurm", "%j"), cluster="slurm",
                                     slurm_max_num_timeout=args.max_requeues)
    base = {"timeout_min": args.time, "cpus_per_task": args.cpus_per_run, "slurm_mem_gb": args.mem_gb,
            "slurm_partition": partition, "slurm_signal_delay_s": args.signal_lead,
            "slurm_setup": list(args.setup)}
    if args.gpus_per_run:
        base["slurm_gpus_per_node"] = args.gpus_per_run
    sbatch = {key: value for key, value in (("account", args.account), ("qos", args.qos),
                                            ("constraint", args.constraint)) if value}
    for option in args.sbatch:
        key, _, value = option.lstrip("-").partition("=")
        sbatch[key] = value or True  # a flag: submitit writes "#SBATCH --KEY"
    dropped = {key: value for key, value in os.environ.items() if key not in (*JOB_VARIABLES, *args.env)}
    with ledger.submitting():  # one launch decides and submits at a time: a second one sees the first's jobs
        code, lanes = None, []
        ledger.adopt_unrecorded_jobs(runs)
        history = ledger.history()
        states = assess(runs, ledger, history, slurm_jobs(record["job"] for record in history.values()))
        for run in runs:
            status = states[run.name]
            if status.state == "finished":
                continue
            waiting = [name for name in run.needs if states[name].state != "finished"]
            waits = [history[name]["job"] for name in waiting if name in history and states[name].state in LIVE]
            if status.state in LIVE:
                record = history.get(run.name)
                # the last job of each run it needs, whether it still runs or has just finished (SLURM then
                # starts the dependant): a job that waits for those is right, even if no run it needs is left
                latest = {history[name]["job"] for name in run.needs if name in history}
                if status.state == "running" or not record or set(record["after"]) <= latest:
                    print(f"kept {run.name}: {status.state} ({status.detail})")
                    continue
                # it waits for a job of a run that has been submitted again since: it would wait forever
                slurm_command(["scancel", record["job"]])
                print(f"cancelled job {record['job']} of {run.name}: it waited for job(s) "
                      f"{','.join(sorted(set(record['after']) - latest))}, which will not finish")
            if len(waits) < len(waiting):  # a run it needs is written by a process the launch did not start
                states[run.name] = Status("blocked", f"by {waiting[0]} ({states[waiting[0]].state})")
                continue
            ledger.clear(run)
            # --max-running K: the launch's jobs run in K lanes, each job after the one K submissions before it
            lane = [lanes[-args.max_running]] if args.max_running and len(lanes) >= args.max_running else []
            after = [*(["afterok:" + ":".join(waits)] if waits else []), *(["afterany:" + lane[0]] if lane else [])]
            extra = {"dependency": ",".join(after), "kill-on-invalid-dep": "yes"} if after else {}
            executor.update_parameters(name=run.name, slurm_additional_parameters={**sbatch, **extra}, **base)
            code = code or ledger.code_snapshot()
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # submitit prints sbatch's whole answer there
                    job = executor.submit(ScriptJob(run.command(opts), job_environment(env, run.env, args), code[0],
                                                    dropped))
            except submitit.core.utils.FailedJobError as err:
                lines = [line.strip() for line in str(err).splitlines() if line.strip()]
                said = ([line for line in lines if "error" in line.lower()] or lines or ["no message"])[0]
                raise LaunchError(f"sbatch refused {run.name}: {said}") from None
            history[run.name] = ledger.record(run, job, waits, code)
            lanes.append(str(job.job_id))
            states[run.name] = Status("queued", f"job {job.job_id}")
            print(f"submitted {run.name}: job {job.job_id}{' after ' + ','.join(waits) if waits else ''}"
                  f"{' (lane: after ' + lane[0] + ')' if lane else ''}")
    if args.wait:
        states = wait_for(runs, ledger, partition)
    return states


def wait_for(runs, ledger, partition, poll_s=2.0):
    """Wait until no run is queued or running, printing each change of a run's state; stop early, with what to do,
    when a queued job can never start (SLURM's reason, or every node of its partition down)."""
    seen = {}
    while True:
        history = ledger.history()
        try:
            jobs = slurm_jobs(record["job"] for record in history.values())
        except LaunchError as err:
            print(f"{time.strftime('%H:%M:%S')} SLURM does not answer ({err}); waiting", flush=True)
            time.sleep(poll_s * 5)
            continue
        states = assess(runs, ledger, history, jobs)
        for run in runs:
            status = states[run.name]
            if seen.get(run.name) != (status.state, status.detail.split(",")[0]):
                seen[run.name] = (status.state, status.detail.split(",")[0])
                print(f"{time.strftime('%H:%M:%S')} {status.state:11s} {run.name}"
                      f"{'  (' + status.detail + ')' if status.detail else ''}", flush=True)
        down = [job for job in jobs.values() if job.live() and job.state == "PENDING" and job.reason in NEVER_STARTS]
        if down:
            job = down[0]
            what = (f"it is held: release it (scontrol release {job.id}) and wait again, or cancel it"
                    if job.reason.startswith("JobHeld") else
                    "its request does not fit the partition or the nodes it needs are down: cancel the launch's "
                    f"jobs (scancel {' '.join(sorted(j.id for j in down))}), change the request and rerun the same "
                    "launch command")
            print(f"error: job {job.id} cannot start, SLURM says {job.reason} (scontrol show job {job.id}); {what}",
                  file=sys.stderr)
            return states
        if not any(status.state in LIVE for status in states.values()):
            return states
        if partition and not partitions().get(partition, {}).get("nodes_up", 1):
            print(f"error: every node of partition {partition!r} is down (sinfo -p {partition}); its jobs cannot run "
                  "until an administrator returns a node to service. Then rerun the same launch command with --wait.",
                  file=sys.stderr)
            return states
        time.sleep(poll_s)


def execute(runs, opts, env, ledger, args):
    """Run ``runs`` (their folders resolved) on the backend ``args`` names: their ``Status`` by name."""
    if args.gpus and args.workers != 1:
        raise LaunchError("--gpus runs one run per GPU; --workers is for the CPU")
    if args.workers < 1:
        raise LaunchError(f"--workers must be 1 or more; got {args.workers}")
    backend = run_local if args.backend == "local" else run_slurm
    return backend(runs, opts, env, ledger, args)


# ----------------------------------------------------------------------------------------------- command line
def add_backend_arguments(parser, slurm_wait_option=True):
    """The options that choose where runs execute; shared by this launcher, the suite and the sweep."""
    parser.add_argument("--backend", choices=("local", "slurm"), default="local")
    parser.add_argument("--gpus", default="", help="local: the GPUs to use, one run on each at a time, e.g. 0,1,2,3")
    parser.add_argument("--workers", type=int, default=1, help="local without --gpus: runs at a time")
    slurm = parser.add_argument_group("slurm backend")
    slurm.add_argument("--partition", default="")
    slurm.add_argument("--time", type=int, default=240, help="minutes per run (a run past it is requeued)")
    slurm.add_argument("--gpus-per-run", type=int, default=0)
    slurm.add_argument("--cpus-per-run", type=int, default=4)
    slurm.add_argument("--mem-gb", type=int, default=16)
    slurm.add_argument("--account", default="")
    slurm.add_argument("--qos", default="")
    slurm.add_argument("--constraint", default="", help="node features, e.g. a100")
    slurm.add_argument("--setup", action="append", default=[],
                       help="a shell line each job runs first, e.g. 'module load cuda' (repeatable)")
    slurm.add_argument("--sbatch", action="append", default=[], metavar="OPTION=VALUE",
                       help="any other sbatch option, e.g. --sbatch reservation=mine (repeatable)")
    slurm.add_argument("--env", action="append", default=[], metavar="NAME",
                       help="a variable of this shell a job also gets (repeatable); by default a job gets "
                            f"{', '.join(JOB_VARIABLES)}")
    slurm.add_argument("--max-running", type=int, default=0, metavar="K",
                       help="at most K of the launch's jobs run at once (for clusters that limit jobs per user); "
                            "0: no cap")
    slurm.add_argument("--max-requeues", type=int, default=3,
                       help="times a job stopped by its time limit is requeued before it counts as failed")
    slurm.add_argument("--signal-lead", type=int, default=90,
                       help="seconds before the time limit at which a job is told to requeue itself")
    if slurm_wait_option:
        slurm.add_argument("--wait", action="store_true",
                           help="wait for every job, printing each change of a run's state")
    else:
        parser.set_defaults(wait=True)  # a caller that reads the records afterwards always waits for its jobs


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("protocol", choices=PROTOCOLS)
    parser.add_argument("trainer", nargs="?", default="", help="default: $TRAINER or DualMIPrompt")
    parser.add_argument("config", nargs="?", default="", help="default: $CONFIG or each run's default")
    parser.add_argument("--trainers", nargs="+", help="several trainers (instead of TRAINER)")
    parser.add_argument("--status", action="store_true", help="print each run's state and exit")
    parser.add_argument("--dry-run", action="store_true", help="print the runs and their commands, run nothing")
    add_backend_arguments(parser)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = argv[argv.index("--") + 1:] if "--" in argv else []
    args = build_parser().parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    env = dict(os.environ)
    output = env.setdefault("OUTPUT", "output")
    output = output if os.path.isabs(output) else os.path.join(REPO, output)
    trainers = args.trainers or [args.trainer or env.get("TRAINER") or "DualMIPrompt"]
    try:
        if args.trainers and args.trainer:
            raise LaunchError("give TRAINER or --trainers, not both")
        if len(opts) % 2:
            raise LaunchError(f"overrides come in KEY VALUE pairs after --; got {' '.join(opts)}")
        runs = expand(args.protocol, trainers, args.config or env.get("CONFIG", ""), env)
        ledger = Ledger(output, args.protocol)
        # --status and --dry-run may look while a launch runs: they keep to their own answers, not empty its
        ledger.share_registry_answers(env, private=args.status or args.dry_run)
        resolve_dirs(runs, opts, env)
        if opts and not args.status:
            check_overrides(opts, env)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.status:
        states = print_status(runs, ledger)
        return 0 if all(status.state == "finished" for status in states.values()) else 1
    if args.dry_run:
        for run in runs:
            needs = f"  (after {', '.join(run.needs)})" if run.needs else ""
            print(f"{run.name}: {' '.join(f'{k}={v}' for k, v in run.env.items())} {shlex.join(run.command(opts))}"
                  f"{needs}")
        return 0
    try:
        states = execute(runs, opts, env, ledger, args)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(counts_line(states, len(runs)))
    for run in runs:
        if states[run.name].state in ("failed", "busy", "blocked", "cancelled"):
            print(status_line(run, states[run.name]), file=sys.stderr)
    if next_step(states):
        print(next_step(states))
    if all(status.state == "finished" for status in states.values()):
        if args.backend == "local":
            print(f"Tables: python3 scripts/tables.py {output}")
        return 0
    # a launch that submits and leaves has done its work when every run is finished or in the queue
    submitted = args.backend == "slurm" and not args.wait
    return 0 if submitted and all(status.state in ("finished", *LIVE) for status in states.values()) else 1

if __name__ == "__main__":
    sys.exit(main())
