"""Run a whole protocol across the GPUs (or CPU workers) of a machine, or as SLURM jobs, with its dependencies.

    python3 scripts/launch.py base2new CoOp --gpus 0,1,2,3            # one run per GPU at a time
    python3 scripts/launch.py base2new --trainers CoOp DualMIPrompt --workers 2   # CPU: two runs at a time
    DATASETS="dtd eurosat" SEEDS="1 2" python3 scripts/launch.py xd CoOp -- OPTIM.MAX_EPOCH 10
    python3 scripts/launch.py base2new CoOp --backend slurm --partition gpu --time 240 --gpus-per-run 1 --wait
    python3 scripts/launch.py base2new CoOp --status                 # finished / running / failed / pending

Each run is one call of a protocol's one-run script (``scripts/base2new_train.sh DATASET SEED TRAINER [CONFIG] --
KEY VALUE ...`` and the others), with the scripts' conventions: DATA, OUTPUT, DATASETS, SEEDS, SHOTS (SHOTS_LIST for
fewshot), XD_SOURCE, TRAINER and CONFIG; ``--trainers`` runs several trainers (the suite's comparison). A run
starts when the run it needs has finished (the new-class test after its training run; every cross-dataset target
after the source run). A finished run (its ``results.json`` exists) is skipped, a run that stopped resumes from its
last checkpoint, and a run being written by another process (its lock is held: ``common/runlock.py``) is left to it.

Local backend: ``--gpus 0,1`` runs one run per listed GPU at a time (``CUDA_VISIBLE_DEVICES``), ``--workers N`` runs N
at a time on the CPU with the cores shared out between them (``OMP_NUM_THREADS``, unless set). SLURM backend: one job
per run through submitit, dependencies as ``afterok`` dependencies, and a run killed by its time limit or by
preemption requeued to resume from its last checkpoint. The logs are in ``$OUTPUT/launch/<protocol>/logs/``.
The suite (``scripts/suite.py``) and the sweep (``scripts/sweep.py``) run their runs through ``execute`` and take the
same backend options.
"""
import argparse
import concurrent.futures
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from common import runlock  # noqa: E402
from common.fileio import atomic_write_json, atomic_write_text  # noqa: E402

PROTOCOLS = ("base2new", "xd", "dg", "fewshot")
BENCHMARK_DATASETS = ("imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd "
                      "eurosat ucf101").split()
XD_TARGETS = {"imagenet": ("caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd "
                           "eurosat ucf101").split(),
              "world": "world_shapes world_textures world_counts world_signs".split()}
DG_TARGETS = {"imagenet": "imagenetv2 imagenet_sketch imagenet_a imagenet_r".split(),
              "world": "world_sketch world_mosaic world_neon".split()}
STATES = ("finished", "running", "failed", "blocked", "pending")


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
class Ledger:
    """Where the launcher keeps the logs of its runs and what it knows of their ends."""

    def __init__(self, output, protocol):
        self.folder = os.path.join(output, "launch", protocol)
        self.logs = os.path.join(self.folder, "logs")
        os.makedirs(self.logs, exist_ok=True)

    def share_registry_answers(self, env):
        """Give this launch's runs one cache of the trainer registry's answers (``cached_registry`` in
        scripts/common.sh), emptied here so that no answer outlives the launch that asked it."""
        path = os.path.join(self.folder, "registry_answers.tsv")
        open(path, "w").close()
        env["REGISTRY_CACHE"] = path

    def log(self, run):
        return os.path.join(self.logs, f"{run.name}.log")

    def failure_mark(self, run):
        return os.path.join(self.logs, f"{run.name}.failed")

    def mark_failed(self, run, status):
        atomic_write_text(self.failure_mark(run), f"{status}\n")

    def clear(self, run):
        if os.path.exists(self.failure_mark(run)):
            os.remove(self.failure_mark(run))


def state_of(run, ledger, states=None):
    if os.path.isfile(os.path.join(run.dir, "results.json")):
        return "finished"
    if runlock.holder_of(run.dir) is not None:
        return "running"
    if os.path.isfile(ledger.failure_mark(run)):
        return "failed"
    if states is not None and any(states.get(name) in ("failed", "blocked") for name in run.needs):
        return "blocked"
    return "pending"


def last_error_line(path):
    try:
        with open(path, errors="replace") as handle:
            lines = [line.strip() for line in handle.read()[-20000:].splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    # the scripts' and train.py's own message ("error: ..."), else any line that speaks of an error, else the last
    ours = [line for line in lines if line.startswith("error:")]
    errors = [line for line in lines if "error" in line.lower()]
    return (ours or errors or lines or ["(empty log)"])[-1][:200]


def print_status(runs, ledger):
    states = {}
    for run in runs:  # in dependency order: a run's needs come before it
        states[run.name] = state_of(run, ledger, states)
    for run in runs:
        line = f"{states[run.name]:9s} {run.name}"
        if states[run.name] == "running":
            line += f"  ({runlock.describe(runlock.holder_of(run.dir) or {})})"
        if states[run.name] == "failed":
            line += f"  log: {ledger.log(run)}\n          last error: {last_error_line(ledger.log(run))}"
        print(line)
    counts = {state: sum(1 for s in states.values() if s == state) for state in STATES}
    print(", ".join(f"{count} {state}" for state, count in counts.items()) + f" (of {len(runs)} runs)")
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

    states = {run.name: state_of(run, ledger) for run in runs}
    for run in runs:  # a failure from an earlier launch is tried again
        if states[run.name] == "failed":
            ledger.clear(run)
            states[run.name] = "pending"
    by_name = {run.name: run for run in runs}
    free, active, failures = worker_slots(args), {}, []
    bar = tqdm(total=len(runs), initial=sum(s == "finished" for s in states.values()), unit="run", file=sys.stdout)
    while True:
        for run in runs:  # a run whose prerequisite failed cannot start
            if states[run.name] == "pending" and any(states[n] in ("failed", "blocked", "busy") for n in run.needs):
                states[run.name] = "blocked"
                bar.update()
        ready = [run for run in runs if states[run.name] == "pending"
                 and all(states[n] == "finished" for n in run.needs)]
        while ready and free:
            run, slot = ready.pop(0), free.pop(0)
            log = open(ledger.log(run), "a")
            log.write(f"=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(run.command(opts))}\n")
            log.flush()
            process = subprocess.Popen(run.command(opts), cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                       env={**env, **run.env, **slot})
            active[run.name] = (process, slot, log)
            states[run.name] = "running"
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
                failures.append(run)
            bar.update()
    bar.close()
    return states, failures


# ----------------------------------------------------------------------------------------------- slurm
class ScriptJob:
    """What a SLURM job runs: one run's script. On a time limit or preemption submitit calls ``checkpoint``, and the
    job is requeued with the same command, which resumes from the run's last checkpoint."""

    def __init__(self, command, env):
        self.command, self.env = command, env

    def __call__(self):
        subprocess.run(self.command, cwd=REPO, env={**os.environ, **self.env}, check=True)

    def checkpoint(self):
        import submitit

        return submitit.helpers.DelayedSubmission(ScriptJob(self.command, self.env))


def run_slurm(runs, opts, env, ledger, args):
    try:
        import submitit
    except ImportError:
        raise LaunchError("the slurm backend needs submitit: pip install submitit") from None
    if ScriptJob.__module__ != "__main__":
        # The job's interpreter cannot import this script (scripts/ is no package): send the class itself.
        import cloudpickle

        cloudpickle.register_pickle_by_value(sys.modules[ScriptJob.__module__])
    executor = submitit.AutoExecutor(folder=os.path.join(ledger.folder, "slurm", "%j"), cluster="slurm")
    base = {"timeout_min": args.time, "cpus_per_task": args.cpus_per_run, "slurm_mem_gb": args.mem_gb}
    if args.partition:
        base["slurm_partition"] = args.partition
    if args.gpus_per_run:
        base["slurm_gpus_per_node"] = args.gpus_per_run
    jobs, states = {}, {}
    for run in runs:
        states[run.name] = state_of(run, ledger, states)
        if states[run.name] in ("finished", "running"):
            continue
        ledger.clear(run)
        waits = [jobs[name].job_id for name in run.needs if name in jobs]
        extra = {"dependency": "afterok:" + ":".join(waits), "kill-on-invalid-dep": "yes"} if waits else {}
        executor.update_parameters(name=run.name, slurm_additional_parameters=extra, **base)
        # a job may see every core of its node (no CPU binding): it uses the CPUs it asked for
        jobs[run.name] = executor.submit(ScriptJob(run.command(opts), {**env, **run.env,
                                                                       **threads_env(args.cpus_per_run)}))
        print(f"submitted {run.name}: job {jobs[run.name].job_id}{' after ' + ','.join(waits) if waits else ''}")
    atomic_write_json(os.path.join(ledger.folder, "slurm_jobs.json"), {name: job.job_id for name, job in jobs.items()})
    failures = []
    if args.wait:
        by_name = {run.name: run for run in runs}
        for name, job, vanished in ended_jobs(jobs):
            run = by_name[name]
            try:
                if vanished:
                    raise LaunchError(f"job {job.job_id} left the queue without a result: cancelled (a run it needs "
                                      f"failed) or killed")
                job.result()
                states[name] = "finished"
            except Exception as err:  # submitit raises for a failed job; its message says why
                states[name] = "failed"
                ledger.mark_failed(run, type(err).__name__)
                with open(ledger.log(run), "a") as handle:  # the job's own output, then why it ended
                    for stream in (job.stdout, job.stderr):
                        handle.write((stream() or "")[-20000:])
                    handle.write(f"\n{err}\n")
                failures.append(run)
    return states, failures


def queued_job_ids():
    """The ids SLURM still lists (pending, running, requeued), or None when ``squeue`` cannot say."""
    try:
        listed = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return set(listed.stdout.split()) if listed.returncode == 0 else None


def ended_jobs(jobs, poll_s=2.0):
    """Yield ``(name, job, vanished)`` for each job as it ends: its result file exists (``vanished`` False), or
    SLURM lists it no more and it left no result (``vanished`` True: cancelled because a job it depends on failed,
    or killed). The queue is read with ``squeue``, not with submitit's ``sacct`` calls, which wait forever for a
    cancelled job on a cluster that keeps no accounting (the localhost cluster of scripts/slurm_localhost.sh)."""
    waiting = dict(jobs)
    while waiting:
        queued = queued_job_ids()
        for name, job in list(waiting.items()):
            if job.paths.result_pickle.exists():
                yield name, waiting.pop(name), False
            elif queued is not None and job.job_id not in queued:
                # the result is written before the job leaves the queue: a second look settles a job that just ended
                yield name, waiting.pop(name), not job.paths.result_pickle.exists()
        if waiting:
            time.sleep(poll_s)


def execute(runs, opts, env, ledger, args):
    """Run ``runs`` (their folders resolved) on the backend ``args`` names: ``(states by name, failed runs)``."""
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
    if slurm_wait_option:
        slurm.add_argument("--wait", action="store_true", help="wait for every job and report the failed ones")
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
        ledger.share_registry_answers(env)
        resolve_dirs(runs, opts, env)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.status:
        print_status(runs, ledger)
        return 0
    if args.dry_run:
        for run in runs:
            needs = f"  (after {', '.join(run.needs)})" if run.needs else ""
            print(f"{run.name}: {' '.join(f'{k}={v}' for k, v in run.env.items())} {shlex.join(run.command(opts))}"
                  f"{needs}")
        return 0
    try:
        states, failures = execute(runs, opts, env, ledger, args)
    except LaunchError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = {state: sum(1 for s in states.values() if s == state) for state in (*STATES, "busy")}
    print(", ".join(f"{count} {state}" for state, count in counts.items() if count) + f" (of {len(runs)} runs)")
    for run in failures:
        print(f"failed: {run.name}: log {ledger.log(run)}\n  last error: {last_error_line(ledger.log(run))}",
              file=sys.stderr)
    if args.backend == "local" and not failures:
        print(f"Tables: python3 scripts/tables.py {output}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
