"""Base-to-new comparison of the trainers on the embedded world benchmark, on a CPU, in minutes.

    python3 scripts/compare_world.py                       # ZeroshotCLIP CoOp CoCoOp MaPLe DualMIPrompt, seeds 1 2 3
    python3 scripts/compare_world.py --trainers CoOp --seeds 1

For every trainer and seed it runs ``scripts/base2new_train.sh`` and ``scripts/base2new_test.sh`` (each trainer's
``world`` config; finished runs are skipped, so an interrupted comparison continues where it stopped), then
prints base / new / harmonic-mean accuracy per trainer from the runs' ``results.json`` records: mean and standard
deviation over the seeds (population form, as Dassl's parse_test_res.py), and the harmonic mean of the mean base
and mean new accuracies (as CoCoOp's tables). A trainer that is not in this checkout is reported as missing, not
an error. Environment: ``DATA`` (default ``./data``, where the world is generated on first use), ``OUTPUT``
(default ``./output``), ``SHOTS`` (16).
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINERS = ("ZeroshotCLIP", "CoOp", "CoCoOp", "MaPLe", "DualMIPrompt")
CONFIG = "world"


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", nargs="+", default=list(TRAINERS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--dataset", default="world")
    parser.add_argument("--table", default="", help="also write the table (markdown) to this file")
    return parser


def available_trainers():
    """Names registered with Dassl in this checkout (importing ``trainers`` registers them)."""
    sys.path.insert(0, REPO)
    import trainers  # noqa: F401  (registers the trainers)
    from dassl.engine import TRAINER_REGISTRY

    return set(TRAINER_REGISTRY.registered_names())


def missing_reason(trainer, registered):
    if trainer not in registered:
        return "not in this checkout (no registered trainer)"
    if not os.path.isfile(os.path.join(REPO, "configs", "trainers", trainer, f"{CONFIG}.yaml")):
        return f"no configs/trainers/{trainer}/{CONFIG}.yaml"
    return ""


def run_dirs(output, dataset, shots, trainer, seed):
    common = os.path.join(dataset, f"shots_{shots}", trainer, CONFIG, f"seed{seed}")
    return tuple(os.path.join(output, "base2new", step, common) for step in ("train_base", "test_new"))


def read_accuracy(folder):
    path = os.path.join(folder, "results.json")
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return json.load(handle)["accuracy"]


def run(script, dataset, seed, trainer, log_path):
    with open(log_path, "a") as log:
        result = subprocess.run(["bash", f"scripts/{script}", dataset, str(seed), trainer, CONFIG], cwd=REPO,
                                stdout=log, stderr=subprocess.STDOUT)
    return result.returncode == 0


def harmonic_mean(base, new):
    return 2 * base * new / (base + new) if base + new > 0 else 0.0


def summarise(values):
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.pstdev(values):.2f}"


def table(rows, seeds):
    header = ["trainer", "base", "new", "HM", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for trainer, base, new in rows:
        hm = f"{harmonic_mean(statistics.mean(base), statistics.mean(new)):.2f}" if base and new else "-"
        done = f"{min(len(base), len(new))}/{len(seeds)}"
        lines.append(f"| {trainer} | {summarise(base)} | {summarise(new)} | {hm} | {done} |")
    return "\n".join(lines)


def commit():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(args):
    output = os.path.join(REPO, os.environ.get("OUTPUT", "output")) if not os.path.isabs(
        os.environ.get("OUTPUT", "output")) else os.environ["OUTPUT"]
    shots = os.environ.get("SHOTS", "16")
    registered = available_trainers()
    missing = {t: missing_reason(t, registered) for t in args.trainers}
    missing = {t: reason for t, reason in missing.items() if reason}
    for trainer, reason in missing.items():
        print(f"{trainer}: skipped, {reason}")
    log_dir = os.path.join(output, "base2new", "logs")
    os.makedirs(log_dir, exist_ok=True)
    started = time.time()
    failures, rows = [], []
    for trainer in [t for t in args.trainers if t not in missing]:
        base, new = [], []
        for seed in args.seeds:
            log_path = os.path.join(log_dir, f"{args.dataset}_{trainer}_seed{seed}.log")
            run_started = time.time()
            ok = run("base2new_train.sh", args.dataset, seed, trainer, log_path) and \
                run("base2new_test.sh", args.dataset, seed, trainer, log_path)
            base_dir, new_dir = run_dirs(output, args.dataset, shots, trainer, seed)
            b, n = read_accuracy(base_dir), read_accuracy(new_dir)
            took = f"[{time.time() - run_started:.0f} s]"
            if not ok or b is None or n is None:
                print(f"{trainer} seed {seed}: FAILED (see {log_path})  {took}", flush=True)
                failures.append(f"{trainer} seed {seed}")
                continue
            print(f"{trainer} seed {seed}: base {b:.2f}, new {n:.2f}  {took}", flush=True)
            base.append(b)
            new.append(n)
        rows.append((trainer, base, new))
    elapsed = time.time() - started
    text = table(rows, args.seeds)
    stamp = datetime.date.today().isoformat()
    footer = (f"{args.dataset}, {shots} shots, seeds {' '.join(map(str, args.seeds))}; run on {stamp} at commit "
              f"{commit()}; {elapsed / 60:.1f} min on {os.cpu_count()} CPU cores")
    if missing:
        footer += f"; not run: {', '.join(missing)}"
    print()
    print(text)
    print()
    print(footer)
    if args.table:
        with open(args.table, "w") as handle:
            handle.write(text + "\n\n" + footer + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args()))
