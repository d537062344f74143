"""The embedded benchmark suite: base-to-new on the world's datasets, averaged like the 11-dataset benchmark, with
the statistics that say whether one method beats another.

    python3 scripts/suite.py                                   # five trainers x seeds 1 2 3 x the five datasets
    python3 scripts/suite.py --quick                           # one seed, two datasets: a first look
    python3 scripts/suite.py --trainers CoOp DualMIPrompt --seeds 1 2 3 -- TRAINER.DUALMIPROMPT.N_CTX 8
    python3 scripts/suite.py --image-seed 1                    # the same classes rendered with other images
    python3 scripts/suite.py --image-seed 0 1 2                # three draws of the images, their cells pooled
    python3 scripts/suite.py --workers 2                       # two runs at a time (--backend slurm: as SLURM jobs)

For every dataset, trainer and seed it runs ``scripts/base2new_train.sh`` and ``scripts/base2new_test.sh`` with the
trainer's ``world`` config through the launcher (``scripts/launch.py``: a finished run is skipped, so an interrupted
suite continues where it stopped; a failed run is named with its log and the suite goes on), one run at a time, or
``--workers N`` at a time on the CPU, one per GPU with ``--gpus 0,1``, or as SLURM jobs with ``--backend slurm`` (and
the launcher's SLURM options); then it reads the runs' ``results.json`` records and prints:

- per dataset and on average over the datasets: base / new accuracy, mean ± standard deviation over the seeds
  (population form, as the tables tool), and HM of the mean base and mean new accuracies (as the papers);
- per trainer, the suite-average HM of each seed (the mean over datasets of that seed's HM) with its standard error
  over the seeds;
- for every pair of trainers, the paired difference of HM over the (seed, dataset) cells that both have (same seed,
  hence the same few-shot images), its mean and 95% t interval over those cells; the same for base and new accuracy.

It writes the table as markdown (``suite.md``), the numbers as JSON (``suite.json``) and a plot of per-dataset HM
with error bars (``suite.png``) into ``--out`` (default: ``suite/`` beside the runs).
Environment: ``DATA`` (default ``./data``; the datasets are generated there on first use), ``OUTPUT`` (default
``./output``), ``SHOTS`` (16). ``--image-seed N`` renders the datasets with image seed N (``DATASET.WORLD_IMAGE_SEED``;
same classes, other images) and keeps its runs under ``$OUTPUT/imageseed<N>``; with several image seeds, each is run (one
after another) and their cells are pooled, a seed of the tables being ``<image seed>/<seed>`` (one draw of the images
and of the few shots), into ``suite_imageseeds_<N>_<M>...`` beside the runs; runs with ``-- KEY VALUE`` overrides
live under ``overrides_<hash of the overrides>``, so a finished run of another setting is never taken for one of these.
"""
import argparse
import datetime
import difflib
import glob
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)


import launch  # noqa: E402

from common.fileio import atomic_write_text  # noqa: E402
from datasets.world.catalog import CATALOG, SUITE  # noqa: E402
from trainers import registry  # noqa: E402
from trainers.results import published  # noqa: E402
from trainers.results import statistics as stats  # noqa: E402
from trainers.results.plots import save_figure  # noqa: E402
from trainers.results.statistics import harmonic_mean, paired_difference  # noqa: E402

CONFIG = "world"  # every trainer's config for the embedded world datasets
# The two smallest datasets (5 and 8 classes per half), on both of which a context learned on the base classes loses
# new-class accuracy: a first look in minutes.
QUICK_DATASETS = ("world_shapes", "world_textures")
QUICK_SEEDS = (1,)


class SuiteError(ValueError):
    """A command line the suite cannot run; the message says what to change."""


def parse_command_line(parser, argv=None):
    """The parsed options, with ``opts`` the ``KEY VALUE`` overrides given after ``--`` (passed to every run)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    args.opts = argv[cut + 1:]
    return args


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trainers", nargs="+", default=suite_trainers())
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 1 2 3 (--quick: 1)")
    parser.add_argument("--datasets", nargs="+", help=f"default: {' '.join(SUITE)} (--quick: {' '.join(QUICK_DATASETS)})")
    parser.add_argument("--quick", action="store_true", help="one seed and two datasets unless given")
    parser.add_argument("--image-seed", type=int, nargs="+", default=[0],
                        help="render the datasets with this image seed (same classes, other images); default 0. "
                             "Several: each is run (one after another) and their cells are pooled in the tables")
    parser.add_argument("--out", default="", help="folder for suite.md, suite.json and suite.png")
    parser.add_argument("--no-run", action="store_true", help="only build the tables from the runs already done")
    launch.add_backend_arguments(parser, slurm_wait_option=False)
    parser.epilog = "After --: KEY VALUE config overrides passed to every run, as the protocol scripts take them."
    return parser


def check_known(given, known, what, flag, known_label="Known"):
    """Refuse a name that is not among ``known`` (a typo would otherwise run, or show, nothing), suggesting the
    closest known names."""
    for name in given:
        if name in known:
            continue
        close = [k for k in known if k.lower() == name.lower()] or difflib.get_close_matches(name, known, n=3,
                                                                                            cutoff=0.5)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise SuiteError(f"unknown {what} {name!r} ({flag}).{hint} {known_label}: {', '.join(known)}.")


def check_trainers(trainers, flag="--trainers"):
    check_known(trainers, registry.names(), "trainer", flag)


def resolve(args):
    """The settings of a suite from the command line: ``(datasets, seeds, overrides)``."""
    datasets = tuple(args.datasets or (QUICK_DATASETS if args.quick else SUITE))
    seeds = tuple(args.seeds or (QUICK_SEEDS if args.quick else (1, 2, 3)))
    usable = [name for name, spec in CATALOG.items() if not spec.test_only]
    check_trainers(args.trainers)
    check_known(datasets, usable, "dataset", "--datasets", "The suite runs base-to-new on the world's datasets")
    if len(set(seeds)) != len(seeds) or len(set(datasets)) != len(datasets) or len(set(args.trainers)) != len(args.trainers):
        raise SuiteError("each trainer, dataset and seed may be named once")
    if any(image_seed < 0 for image_seed in args.image_seed):
        raise SuiteError(f"--image-seed must be zero or positive; got {' '.join(map(str, args.image_seed))}")
    if len(set(args.image_seed)) != len(args.image_seed):
        raise SuiteError("each image seed may be named once")
    if not os.environ.get("SHOTS", "16").isdigit():
        raise SuiteError(f"SHOTS must be a positive number of shots; got {os.environ['SHOTS']!r}")
    opts = list(args.opts)
    if len(opts) % 2:
        raise SuiteError(f"overrides come in KEY VALUE pairs after --; got {' '.join(opts)}")
    reserved = {"DATASET.WORLD_IMAGE_SEED": "--image-seed", "DATASET.VAL_FOLD": "scripts/sweep.py"}
    for key in opts[0::2]:
        if key in reserved:
            raise SuiteError(f"{key} is set by the suite's options: use {reserved[key]}")
    return datasets, seeds, opts


def output_root(image_seed=0, opts=()):
    """Where a suite's runs live: ``$OUTPUT``, under ``imageseed<N>`` for another image seed, and under
    ``overrides_<hash>`` when overrides are given, so that runs of other settings are never taken for these."""
    output = os.environ.get("OUTPUT", "output")
    output = output if os.path.isabs(output) else os.path.join(REPO, output)
    if image_seed:
        output = os.path.join(output, f"imageseed{image_seed}")
    if opts:
        output = os.path.join(output, "overrides_" + hashlib.sha1(" ".join(opts).encode()).hexdigest()[:10])
    return output


def suite_trainers():
    """The trainers the suite compares by default: those the registry puts in it, in table order."""
    return [spec.name for spec in registry.specs() if spec.in_suite and spec.world_config == CONFIG]


def missing_reason(trainer):
    try:
        registry.get(trainer).config_path(CONFIG)
    except registry.RegistryError as err:
        return str(err)
    return ""


def run_dirs(output, dataset, shots, trainer, seed, config=CONFIG):
    """The folders of a run's two records (base, then new). ``config`` "" finds the one config the scripts chose."""
    if not config:
        found = sorted(glob.glob(os.path.join(glob.escape(os.path.join(output, "base2new", "train_base", dataset,
                                                                       f"shots_{shots}", trainer)), "*")))
        config = os.path.basename(found[0]) if len(found) == 1 else "?"
    common = os.path.join(dataset, f"shots_{shots}", trainer, config, f"seed{seed}")
    return tuple(os.path.join(output, "base2new", step, common) for step in ("train_base", "test_new"))


def read_accuracy(folder):
    """The accuracy of a finished run's record, or None when the run is not finished or its record is unusable."""
    path = os.path.join(folder, "results.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as handle:
            accuracy = json.load(handle)["accuracy"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 100:
        return None
    return float(accuracy)


def base2new_runs(trainers, datasets, seeds, config, output, opts=(), prefix=""):
    """The launcher's runs for these cells, written under ``output``, with ``opts`` as their own overrides and
    ``prefix`` before their names (several settings of a sweep run in one launch)."""
    runs = launch.expand("base2new", trainers, config,
                         {"DATASETS": " ".join(datasets), "SEEDS": " ".join(map(str, seeds))})
    for run in runs:
        run.name, run.needs = prefix + run.name, [prefix + name for name in run.needs]
        run.env["OUTPUT"], run.opts = output, list(opts)
    return runs


def execute(runs, ledger_root, backend, say=print):
    """Run ``runs`` through the launcher (``scripts/launch.py``) on the backend its options name (finished runs are
    skipped, stopped ones resume): the list of failed cells, each naming its log."""
    env = dict(os.environ)
    ledger = launch.Ledger(ledger_root, "base2new")
    ledger.share_registry_answers(env)
    launch.resolve_dirs(runs, [], env)
    states = launch.execute(runs, [], env, ledger, backend)
    failures, seen = [], set()
    for run in runs:  # a cell is one training run and its new-class test; the first that did not finish is named
        cell = (run.env["OUTPUT"], run.trainer, run.dataset, run.seed)
        status = states[run.name]
        if status.state == "finished" or cell in seen:
            continue
        seen.add(cell)
        why = {"busy": "not run, another process is writing it"}.get(status.state, status.state.upper())
        log = status.log or ledger.log(run)
        failures.append({"dataset": run.dataset, "trainer": run.trainer, "seed": int(run.seed), "log": log})
        say(f"{run.name}: {why}" + (f" ({status.detail})" if status.detail else "") + f", see {log}")
    return failures


# ----------------------------------------------------------------------------------------------- statistics
def collect(output, shots, trainers, datasets, seeds, config=CONFIG):
    """``{trainer: {dataset: {seed: (base, new)}}}`` for the runs whose two records exist."""
    found = {}
    for trainer in trainers:
        for dataset in datasets:
            for seed in seeds:
                base, new = (read_accuracy(d) for d in run_dirs(output, dataset, shots, trainer, seed, config))
                if base is not None and new is not None:
                    found.setdefault(trainer, {}).setdefault(dataset, {})[seed] = (base, new)
    return found


def collect_draws(outputs, shots, trainers, datasets, seeds, config=CONFIG):
    """``(results, seeds)`` over the image seeds' run folders ``outputs`` (``{image seed: folder}``): for one, its
    ``collect`` and ``seeds``; for several, every image seed's cells pooled, each seed named ``"<image seed>/<seed>"``
    (a draw of the images and of the few shots), so that the statistics treat each draw as a seed."""
    if len(outputs) == 1:
        (output,) = outputs.values()
        return collect(output, shots, trainers, datasets, seeds, config), list(seeds)
    pooled = {}
    for image_seed, output in outputs.items():
        for trainer, by_dataset in collect(output, shots, trainers, datasets, seeds, config).items():
            for dataset, by_seed in by_dataset.items():
                for seed, accuracies in by_seed.items():
                    pooled.setdefault(trainer, {}).setdefault(dataset, {})[f"{image_seed}/{seed}"] = accuracies
    return pooled, [f"{image_seed}/{seed}" for image_seed in outputs for seed in seeds]


def mean_std(values):
    spread = stats.mean_std(values)
    return None if spread is None else {"mean": spread[0], "std": spread[1], "n": len(values)}


def summary(results, trainers, datasets, seeds):
    """The suite's numbers: per dataset and average (base, new, HM), per-seed suite HM with its standard error, and
    the paired differences of HM, base and new accuracy between every two trainers."""
    rows = {}
    cells = {}  # trainer -> {(seed, dataset): HM of that seed on that dataset}
    accuracies = {}  # trainer -> {(seed, dataset): (base, new)}
    for trainer in trainers:
        runs = results.get(trainer, {})
        per_dataset = {}
        for dataset in datasets:
            by_seed = runs.get(dataset, {})
            base = mean_std([b for b, _ in by_seed.values()])
            new = mean_std([n for _, n in by_seed.values()])
            per_dataset[dataset] = {
                "base": base, "new": new, "seeds": sorted(by_seed),
                "hm": harmonic_mean(base["mean"], new["mean"]) if base and new else None,
                "hm_std": statistics.pstdev([harmonic_mean(b, n) for b, n in by_seed.values()]) if by_seed else None,
            }
            for seed, (b, n) in by_seed.items():
                cells.setdefault(trainer, {})[(seed, dataset)] = harmonic_mean(b, n)
                accuracies.setdefault(trainer, {})[(seed, dataset)] = (b, n)
        # Seeds with a run on every dataset make the average (the others are reported as incomplete).
        full = [seed for seed in seeds if all(seed in runs.get(d, {}) for d in datasets)]
        avg_base = {s: statistics.fmean(runs[d][s][0] for d in datasets) for s in full}
        avg_new = {s: statistics.fmean(runs[d][s][1] for d in datasets) for s in full}
        suite_hm = {s: statistics.fmean(cells[trainer][(s, d)] for d in datasets) for s in full}
        base, new = mean_std(list(avg_base.values())), mean_std(list(avg_new.values()))
        se = statistics.stdev(suite_hm.values()) / math.sqrt(len(full)) if len(full) > 1 else None
        rows[trainer] = {
            "datasets": per_dataset,
            "average": {"base": base, "new": new, "seeds": full,
                        "hm": harmonic_mean(base["mean"], new["mean"]) if base and new else None,
                        "hm_std": statistics.pstdev(suite_hm.values()) if full else None},
            "suite_hm_per_seed": {str(s): v for s, v in suite_hm.items()},
            "suite_hm_mean": statistics.fmean(suite_hm.values()) if full else None,
            "suite_hm_se": se,
            "complete": len(full) == len(seeds),
        }
    pairs = []
    for i, first in enumerate(trainers):
        for second in trainers[i + 1:]:
            shared = sorted(set(cells.get(first, {})) & set(cells.get(second, {})))
            if not shared:
                continue
            diff = paired_difference([cells[second][c] for c in shared], [cells[first][c] for c in shared])
            # The same over the cells' base and new accuracy: where a difference of HM comes from (the methods that
            # keep zero-shot knowledge exist for the new classes).
            parts = {part: paired_difference([accuracies[second][c][i] for c in shared],
                                             [accuracies[first][c][i] for c in shared])
                     for i, part in enumerate(("base", "new"))}
            pairs.append({"a": second, "b": first, **diff, **parts})
    return {"trainers": rows, "pairs": pairs}


def ranks(values):
    """Rank 1 for the highest value; tied values share the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: -values[i])
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            result[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return result


def beside_published(numbers, trainers, datasets):
    """Does the suite see what the 11-dataset benchmark sees? For each trainer with a published 11-dataset average
    (trainers/results/published.py): its suite-average and published HM and their ranks, and its new-class accuracy
    minus zero-shot CLIP's on both (on the real datasets learned prompts lose what zero-shot CLIP knows of new
    classes: CoOp's new accuracy is below zero-shot CLIP's on each of the 11), with the datasets where it falls
    below; then Spearman's rank correlation of the two HM columns."""
    paper_of = {trainer: paper for paper, trainer in published.TRAINER_OF.items()}
    rows = []
    for trainer in trainers:
        average = numbers["trainers"][trainer]["average"]
        paper = published.BASE2NEW_AVERAGE.get(paper_of.get(trainer))
        if average["hm"] is None or paper is None:
            continue
        rows.append({"trainer": trainer, "paper": paper_of[trainer],
                     "suite": {"base": average["base"]["mean"], "new": average["new"]["mean"], "hm": average["hm"]},
                     "published": dict(zip(("base", "new", "hm"), paper))})
    zero_shot = next((row for row in rows if row["trainer"] == "ZeroshotCLIP"), None)
    for row in rows:
        row["new_minus_zero_shot"] = row["new_below_zero_shot"] = None
        if zero_shot is None:
            continue
        row["new_minus_zero_shot"] = {where: row[where]["new"] - zero_shot[where]["new"] for where in ("suite", "published")}
        mine = numbers["trainers"][row["trainer"]]["datasets"]
        zero = numbers["trainers"]["ZeroshotCLIP"]["datasets"]
        compared = [d for d in datasets if mine[d]["new"] and zero[d]["new"]]
        below = {"suite": [sum(mine[d]["new"]["mean"] < zero[d]["new"]["mean"] for d in compared), len(compared)]}
        papers = published.BASE2NEW.get(row["paper"]), published.BASE2NEW.get("CLIP")
        if all(papers):
            shared = [d for d in papers[0] if d in papers[1]]
            below["published"] = [sum(papers[0][d][1] < papers[1][d][1] for d in shared), len(shared)]
        row["new_below_zero_shot"] = below
    for where in ("suite", "published"):
        for row, rank in zip(rows, ranks([row[where]["hm"] for row in rows])):
            row[where]["rank"] = rank
    rho = None
    if len(rows) >= 3:
        try:
            rho = statistics.correlation([r["suite"]["rank"] for r in rows], [r["published"]["rank"] for r in rows])
        except statistics.StatisticsError:  # every rank tied in one column
            rho = None
    return {"rows": rows, "spearman": rho}


# ----------------------------------------------------------------------------------------------- rendering
def fmt(stat, digits=2):
    if stat is None:
        return "-"
    if stat["n"] == 1:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def fmt_hm(value, std, n):
    if value is None:
        return "-"
    return f"{value:.2f}" if n <= 1 else f"{value:.2f} ± {std:.2f}"


def markdown(numbers, trainers, datasets, seeds, footer):
    lines = ["| dataset | trainer | base | new | HM | seeds |", "|---|---|---|---|---|---|"]
    for dataset in (*datasets, "average"):
        for trainer in trainers:
            row = numbers["trainers"][trainer]
            part = row["average"] if dataset == "average" else row["datasets"][dataset]
            n = len(part["seeds"])
            label = f"**average ({len(datasets)})**" if dataset == "average" else dataset
            lines.append(f"| {label} | {trainer} | {fmt(part['base'])} | {fmt(part['new'])} | "
                         f"{fmt_hm(part['hm'], part['hm_std'], n)} | {n}/{len(seeds)} |")
    lines += ["", "Suite-average HM per seed (mean over datasets of each seed's HM), mean and standard error over seeds:",
              "", "| trainer | per seed | mean | standard error |", "|---|---|---|---|"]
    for trainer in trainers:
        row = numbers["trainers"][trainer]
        per_seed = ", ".join(f"{v:.2f}" for v in row["suite_hm_per_seed"].values()) or "-"
        mean = "-" if row["suite_hm_mean"] is None else f"{row['suite_hm_mean']:.2f}"
        se = "-" if row["suite_hm_se"] is None else f"{row['suite_hm_se']:.2f}"
        lines.append(f"| {trainer} | {per_seed} | {mean} | {se} |")
    if numbers["pairs"]:
        lines += ["", "Paired differences of HM, A - B, over the (seed, dataset) cells both have; 95% t interval; then "
                      "the same for the new-class and the base-class accuracy:",
                  "", "| A | B | mean difference | 95% interval | cells | interval excludes 0 | new: difference "
                      "[95% interval] | base: difference [95% interval] |", "|---|---|---|---|---|---|---|---|"]

        def interval(diff):
            return "-" if diff["low"] is None else f"[{diff['low']:+.2f}, {diff['high']:+.2f}]"

        def with_interval(diff):
            return f"{diff['mean']:+.2f}" + ("" if diff["low"] is None else f" {interval(diff)}")

        for pair in numbers["pairs"]:
            excludes = "-" if pair["low"] is None else ("yes" if pair["low"] > 0 or pair["high"] < 0 else "no")
            parts = " | ".join(with_interval(pair[part]) for part in ("new", "base"))
            lines.append(f"| {pair['a']} | {pair['b']} | {pair['mean']:+.2f} | {interval(pair)} | {pair['n']} | "
                         f"{excludes} | {parts} |")
    lines += published_lines(numbers.get("published"))
    return "\n".join(lines) + "\n\n" + footer + "\n"


def published_lines(found):
    """The table of ``beside_published``, or nothing when no trainer of the suite has a published average."""
    if not found or not found["rows"]:
        return []
    lines = ["", "Beside the published 11-dataset averages (ViT-B/16; sources in trainers/results/published.py): HM "
             "and its rank on each, and new-class accuracy minus zero-shot CLIP's, with the datasets where it is "
             "below zero-shot CLIP's:", "",
             "| trainer | HM suite | HM published | rank suite | rank published | new − zero-shot, suite | "
             "new − zero-shot, published | below zero-shot, suite | below zero-shot, published |",
             "|---|---|---|---|---|---|---|---|---|"]

    def count(below, where):
        return "-" if not below or where not in below else f"{below[where][0]}/{below[where][1]}"

    for row in found["rows"]:
        gap = row["new_minus_zero_shot"]
        gaps = ["-", "-"] if gap is None else [f"{gap['suite']:+.2f}", f"{gap['published']:+.2f}"]
        lines.append(f"| {row['trainer']} | {row['suite']['hm']:.2f} | {row['published']['hm']:.2f} | "
                     f"{row['suite']['rank']:g} | {row['published']['rank']:g} | {gaps[0]} | {gaps[1]} | "
                     f"{count(row['new_below_zero_shot'], 'suite')} | {count(row['new_below_zero_shot'], 'published')} |")
    rho = found["spearman"]
    lines += ["", f"Spearman's rank correlation of the two HM columns over {len(found['rows'])} trainers: "
                  + ("-" if rho is None else f"{rho:+.2f}") + "."]
    return lines


def plot(numbers, trainers, datasets, path):
    """Per-dataset HM (and the average) for each trainer, error bars the standard deviation over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = (*datasets, "average")
    width = 0.8 / max(len(trainers), 1)
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(groups)), 4.5))
    for i, trainer in enumerate(trainers):
        row = numbers["trainers"][trainer]
        xs, ys, errs = [], [], []
        for j, group in enumerate(groups):
            part = row["average"] if group == "average" else row["datasets"][group]
            if part["hm"] is not None:
                xs.append(j + (i - (len(trainers) - 1) / 2) * width)
                ys.append(part["hm"])
                errs.append(part["hm_std"] if len(part["seeds"]) > 1 else 0.0)
        ax.bar(xs, ys, width, yerr=errs, capsize=2, label=trainer)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, rotation=20, ha="right")
    ax.set_ylabel("HM of base and new accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=min(len(trainers), 5), fontsize="small")
    ax.set_title("Embedded benchmark suite: base-to-new HM (error bars: std over seeds)")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def commit():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPU cores"


def main(argv=None):
    args = parse_command_line(build_parser(), argv)
    try:
        datasets, seeds, opts = resolve(args)
    except SuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    image_seeds = sorted(args.image_seed)  # in any order, the same draws pool into the same folder
    outputs = {image_seed: output_root(image_seed, opts) for image_seed in image_seeds}
    run_opts = {image_seed: opts + (["DATASET.WORLD_IMAGE_SEED", str(image_seed)] if image_seed else [])
                for image_seed in image_seeds}
    pooled = len(image_seeds) > 1
    shots = os.environ.get("SHOTS", "16")
    started = time.time()
    failures = []
    trainers = list(args.trainers)
    if not args.no_run:
        missing = {t: missing_reason(t) for t in trainers}
        for trainer, reason in missing.items():
            if reason:
                print(f"{trainer}: skipped, {reason}")
        trainers = [t for t in trainers if not missing[t]]
        try:
            for image_seed, output in outputs.items():
                failed = execute(base2new_runs(trainers, datasets, seeds, CONFIG, output, run_opts[image_seed]),
                                 output, args)
                failures += [{**failure, "image_seed": image_seed} if pooled else failure for failure in failed]
        except launch.LaunchError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    elapsed = time.time() - started
    results, cell_seeds = collect_draws(outputs, shots, trainers, datasets, seeds)
    numbers = summary(results, trainers, datasets, cell_seeds)
    numbers["published"] = beside_published(numbers, trainers, datasets)
    draws = (f"image seeds {' '.join(map(str, image_seeds))}, their cells pooled (a seed is <image seed>/<seed>)"
             if pooled else f"image seed {image_seeds[0]}")
    shown_opts = run_opts[image_seeds[0]] if not pooled else opts
    footer = (f"Suite: {', '.join(datasets)}; {shots} shots; seeds {' '.join(map(str, seeds))}; {draws}"
              f"{'; overrides ' + ' '.join(shown_opts) if shown_opts else ''}. Run on {datetime.date.today()} at "
              f"commit {commit()} on {machine()}; {elapsed / 60:.1f} min.")
    text = markdown(numbers, trainers, datasets, cell_seeds, footer)
    default_out = (os.path.join(output_root(0, opts), "suite_imageseeds_" + "_".join(map(str, image_seeds)))
                   if pooled else os.path.join(outputs[image_seeds[0]], "suite"))
    out = args.out or default_out
    os.makedirs(out, exist_ok=True)
    record = {"datasets": list(datasets), "seeds": list(seeds), "shots": int(shots),
              "runs": list(outputs.values()) if pooled else outputs[image_seeds[0]],
              "image_seed": None if pooled else image_seeds[0], "image_seeds": list(image_seeds),
              "overrides": shown_opts, "date": str(datetime.date.today()), "commit": commit(),
              "machine": machine(), "elapsed_s": round(elapsed, 1), "failures": failures, **numbers}
    written = []
    if any(numbers["trainers"][t]["datasets"][d]["hm"] is not None for t in trainers for d in datasets):
        plot(numbers, trainers, datasets, os.path.join(out, "suite.png"))
        written.append("suite.png")
    return report(out, "suite", text, record, failures, written)


def report(out, stem, text, record, failures, written=()):
    """Write ``<stem>.md`` and ``<stem>.json`` into ``out``, print the table, name every failed run with its log;
    the exit status: 1 when a run failed."""
    atomic_write_text(os.path.join(out, f"{stem}.md"), text)
    atomic_write_text(os.path.join(out, f"{stem}.json"), json.dumps(record, indent=2) + "\n")
    print()
    print(text)
    print(f"Written: {out}/{', '.join([f'{stem}.md', f'{stem}.json', *written])}")
    if failures:
        print(f"{len(failures)} run(s) failed:", file=sys.stderr)
        for failure in failures:
            draw = f" (image seed {failure['image_seed']})" if "image_seed" in failure else ""
            print(f"  {failure['dataset']} {failure['trainer']} seed {failure['seed']}{draw}: see {failure['log']}",
                  file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
