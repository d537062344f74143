"""Choose hyperparameters on validation data only: a grid of config overrides x validation folds x seeds, ranked by
the harmonic mean of pseudo-base and pseudo-new accuracy.

    python3 scripts/sweep.py DualMIPrompt --grid TRAINER.DUALMIPROMPT.W_ALIGN=0.0,1.0,8.0
    python3 scripts/sweep.py DualMIPrompt --grid TRAINER.DUALMIPROMPT.W_ALIGN=0.0,8.0 \\
        --grid TRAINER.DUALMIPROMPT.W_CONSIST=0.0,1.0 --seeds 1 2
    python3 scripts/sweep.py DualMIPrompt --try TRAINER.DUALMIPROMPT.W_ALIGN=8.0 \\
        --try TRAINER.DUALMIPROMPT.W_ALIGN=8.0,TRAINER.DUALMIPROMPT.TEMPLATES=ensemble
    DATA=/path/to/datasets python3 scripts/sweep.py CoOp --grid OPTIM.LR=0.002,0.004 --datasets oxford_pets dtd

Every run is a base-to-new run with ``DATASET.VAL_FOLD k``: the base classes of the dataset are split into
pseudo-base and pseudo-new classes (fold k of ``DATASET.VAL_FOLDS``, default 2), the model is trained on the
few-shot images of the pseudo-base classes and evaluated on held-out training images (those not among the few shots,
and the validation split) of both. No run reads a test image or a new class, so the ranking may be used to choose
defaults. The scripts run each trainer's default config for each dataset (``--config`` to choose one); the world's
suite is the default set of datasets.

Each setting (one value per ``--grid`` key; the first value of each key should be the current default, so the first
setting is the reference; or, with ``--try``, the config as it is, named ``default`` and taken as the reference,
then each ``--try`` setting) keeps its runs under ``$OUTPUT/sweep/<trainer>/<setting>/fold<k>/``, so finished runs are
skipped and an interrupted sweep continues. All runs go through the launcher (``scripts/launch.py``) in one launch:
``--workers N``, ``--gpus 0,1`` or ``--backend slurm`` run the settings and folds side by side.
``--beside CoOp KgCoOp`` ranks other trainers (their default config, the same folds, seeds and overrides, in the
folders their own sweeps use) beside the settings, as rows that are not candidates.
The table ranks the settings by mean HM over the (fold, seed, dataset) cells that every setting finished, with the
paired difference to the reference setting and its 95% t interval over the same cells; it is written
to ``sweep.md`` and ``sweep.json`` in ``$OUTPUT/sweep/<trainer>/`` (``--out`` to choose).
"""
import argparse
import datetime
import itertools
import os
import re
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import suite  # noqa: E402  (also puts the repository on sys.path)

from datasets.world.catalog import CATALOG, SUITE  # noqa: E402
from trainers.results.statistics import harmonic_mean, paired_difference  # noqa: E402


def parse_grid(specs):
    """``["KEY=a,b", ...]`` -> ``[(KEY, [a, b]), ...]``, in the order given."""
    grid = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        values = [v for v in values.split(",") if v != ""]
        if not sep or not key or not values or not re.fullmatch(r"[A-Z0-9_]+(\.[A-Z0-9_]+)+", key):
            raise suite.SuiteError(f"--grid takes KEY=VALUE[,VALUE...] with a config key in upper case, e.g. "
                                   f"TRAINER.DUALMIPROMPT.W_ALIGN=0.0,8.0; got {spec!r}")
        if key in (k for k, _ in grid):
            raise suite.SuiteError(f"--grid names {key} twice")
        grid.append((key, values))
    return grid


def settings(grid, tries=()):
    """Every combination of the grid, as ``[(KEY, value), ...]`` (the first, each key's first value, is the
    reference), then each ``--try`` setting; with tries only, the reference is the config as it is (no override)."""
    keys = [key for key, _ in grid]
    combos = [list(zip(keys, values)) for values in itertools.product(*(values for _, values in grid))]
    extra = []
    for text in tries:
        pieces = text.split(",")
        if any("=" not in piece for piece in pieces):
            raise suite.SuiteError(f"--try gives one value per key, KEY=VALUE[,KEY=VALUE...]; got {text!r}")
        extra.append([(key, values[0]) for key, values in parse_grid(pieces)])
    return combos + extra


def setting_name(setting):
    """A folder name for a setting: ``W_ALIGN=8.0,W_CONSIST=1.0`` (the config node's prefix left out)."""
    if not setting:
        return "default"
    text = ",".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in setting)
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", text)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trainer")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="a config key and its values (repeat for a product grid)")
    parser.add_argument("--try", dest="tries", action="append", default=[], metavar="KEY=V[,KEY=V...]",
                        help="one more setting (repeat); the reference is then the config without overrides")
    parser.add_argument("--beside", nargs="+", default=[], metavar="TRAINER",
                        help="other trainers ranked beside the settings on the same cells (their default config, the "
                             "same folds, seeds and overrides; not candidates), e.g. --beside CoOp KgCoOp")
    parser.add_argument("--datasets", nargs="+", default=list(SUITE))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1])
    parser.add_argument("--folds", nargs="+", type=int, help="validation folds to run (default: all of --val-folds)")
    parser.add_argument("--val-folds", type=int, default=2, help="how many folds the base classes are cut into")
    parser.add_argument("--config", default="", help="the trainer config for every run (default: each dataset's)")
    parser.add_argument("--out", default="")
    parser.add_argument("--no-run", action="store_true", help="only rank the runs already there")
    suite.launch.add_backend_arguments(parser, slurm_wait_option=False)
    parser.epilog = "After --: KEY VALUE config overrides for every run."
    return parser


def rank(results, names, datasets, seeds, folds):
    """Per setting: the means over the (fold, seed, dataset) cells that every setting has (so that no setting is
    ranked on easier cells), how many of its own cells finished, and the paired difference to the first setting.
    A setting with no finished cell at all (every run failed) is listed last without numbers and left out of the
    shared cells, so that it does not blank the others."""
    cells = {}
    for name in names:
        cells[name] = {}
        for fold in folds:
            for dataset, by_seed in results[name].get(fold, {}).items():
                for seed, (base, new) in by_seed.items():
                    cells[name][(fold, seed, dataset)] = (base, new, harmonic_mean(base, new))
    finished = [set(c) for c in cells.values() if c]
    shared = sorted(set.intersection(*finished)) if finished else []
    expected = len(folds) * len(seeds) * len(datasets)
    rows = []
    for name in names:
        values = [cells[name][c] for c in shared] if cells[name] else []
        rows.append({
            "setting": name, "cells": len(cells[name]), "expected_cells": expected, "ranked_on": len(shared),
            "base": statistics.fmean(v[0] for v in values) if values else None,
            "new": statistics.fmean(v[1] for v in values) if values else None,
            "hm": statistics.fmean(v[2] for v in values) if values else None,
            "vs_reference": None,
            "datasets": per_dataset(cells[name], shared, datasets) if cells[name] else {},
        })
        if values and name != names[0] and cells[names[0]]:
            rows[-1]["vs_reference"] = paired_difference([cells[name][c][2] for c in shared],
                                                         [cells[names[0]][c][2] for c in shared])
    rows.sort(key=lambda r: (r["hm"] is None, -(r["hm"] or 0)))
    return rows


def per_dataset(cells, shared, datasets):
    """``{dataset: {base, new, hm}}``: one setting's means over the shared cells of each dataset."""
    found = {}
    for dataset in datasets:
        values = [cells[c] for c in shared if c[2] == dataset]
        if values:
            found[dataset] = {key: statistics.fmean(v[i] for v in values) for i, key in enumerate(("base", "new", "hm"))}
    return found


def markdown(rows, reference, footer):
    lines = ["| rank | setting | pseudo-base | pseudo-new | HM | vs reference (95% interval) | cells |",
             "|---|---|---|---|---|---|---|"]
    for i, row in enumerate(rows, 1):
        def f(value):
            return "-" if value is None else f"{value:.2f}"
        diff = row["vs_reference"]
        if row["setting"] == reference:
            versus = "reference"
        elif diff is None:
            versus = "-"
        elif diff["low"] is None:
            versus = f"{diff['mean']:+.2f}"
        else:
            versus = f"{diff['mean']:+.2f} [{diff['low']:+.2f}, {diff['high']:+.2f}]"
        lines.append(f"| {i} | {row['setting']} | {f(row['base'])} | {f(row['new'])} | {f(row['hm'])} | {versus} | "
                     f"{row['cells']}/{row['expected_cells']} |")
    datasets = list(dict.fromkeys(d for row in rows for d in row.get("datasets", {})))
    for key, what in (("hm", "HM"), ("new", "pseudo-new accuracy")):
        if not datasets:
            break
        lines += ["", f"Per dataset, {what} (means over the same cells):", "",
                  "| setting | " + " | ".join(datasets) + " |", "|---" * (len(datasets) + 1) + "|"]
        for row in rows:
            by_dataset = row.get("datasets", {})
            lines.append(f"| {row['setting']} | " + " | ".join(
                f"{by_dataset[d][key]:.2f}" if d in by_dataset else "-" for d in datasets) + " |")
    return "\n".join(lines) + "\n\n" + footer + "\n"


def sweepable_datasets():
    """The datasets a validation fold can run on: those with a config in configs/datasets, except the world's
    test-only ones (they have no training images to hold out)."""
    folder = os.path.join(suite.REPO, "configs", "datasets")
    names = sorted(name[:-len(".yaml")] for name in os.listdir(folder) if name.endswith(".yaml"))
    return [name for name in names if name not in CATALOG or not CATALOG[name].test_only]


def main(argv=None):
    args = suite.parse_command_line(build_parser(), argv)
    try:
        grid = parse_grid(args.grid)
        opts = list(args.opts)
        if len(opts) % 2:
            raise suite.SuiteError(f"overrides come in KEY VALUE pairs after --; got {' '.join(opts)}")
        if any(key in ("DATASET.VAL_FOLD", "DATASET.VAL_FOLDS") for key in opts[0::2]):
            raise suite.SuiteError("the sweep sets DATASET.VAL_FOLD itself; give the folds with --folds / --val-folds")
        if args.val_folds < 2:
            raise suite.SuiteError(f"--val-folds must be 2 or more; got {args.val_folds}")
        args.folds = args.folds or list(range(1, args.val_folds + 1))
        if any(not 1 <= fold <= args.val_folds for fold in args.folds) or len(set(args.folds)) != len(args.folds):
            raise suite.SuiteError(f"--folds takes distinct fold numbers from 1 to --val-folds {args.val_folds}; "
                                   f"got {args.folds}")
        if not os.environ.get("SHOTS", "16").isdigit():
            raise suite.SuiteError(f"SHOTS must be a positive number of shots; got {os.environ['SHOTS']!r}")
        if len(set(args.seeds)) != len(args.seeds) or len(set(args.datasets)) != len(args.datasets):
            raise suite.SuiteError("each dataset and seed may be named once")
        suite.check_trainers([args.trainer], "the trainer argument")
        suite.check_trainers(args.beside, "--beside")
        if args.trainer in args.beside or len(set(args.beside)) != len(args.beside):
            raise suite.SuiteError("--beside names other trainers, each once (the swept trainer is ranked anyway)")
        suite.check_known(args.datasets, sweepable_datasets(), "dataset", "--datasets")
    except suite.SuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # Fixed overrides get a folder of their own (as the suite's), each setting one below it.
    root = os.path.join(suite.output_root(0, opts), "sweep", args.trainer)
    shots = os.environ.get("SHOTS", "16")
    started = time.time()
    try:
        combos = settings(grid, args.tries)
    except suite.SuiteError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    names = [setting_name(setting) for setting in combos]
    if len(set(names)) != len(names):
        print("error: two settings are the same", file=sys.stderr)
        return 2
    folders = {(name, fold): os.path.join(root, name, f"fold{fold}") for name in names for fold in args.folds}
    # A trainer beside the settings: its default config's runs, in the folder of its own sweep with the same overrides
    # (so ``sweep.py <it>`` and ``--beside <it>`` share their runs).
    beside = {f"{trainer} (beside)": trainer for trainer in args.beside}
    for label, trainer in beside.items():
        for fold in args.folds:
            folders[label, fold] = os.path.join(os.path.dirname(root), trainer, "default", f"fold{fold}")
    failures = []
    if not args.no_run:  # every setting and fold in one launch, so that a pool or a cluster runs them side by side
        runs = []
        for setting, name in zip(combos, names):
            setting_opts = [item for key, value in setting for item in (key, value)]
            for fold in args.folds:
                runs += suite.base2new_runs([args.trainer], args.datasets, args.seeds, args.config, folders[name, fold],
                                            opts + setting_opts + ["DATASET.VAL_FOLD", str(fold),
                                                                   "DATASET.VAL_FOLDS", str(args.val_folds)],
                                            prefix=f"{name}.fold{fold}.")
        for label, trainer in beside.items():
            for fold in args.folds:
                runs += suite.base2new_runs([trainer], args.datasets, args.seeds, "", folders[label, fold],
                                            opts + ["DATASET.VAL_FOLD", str(fold), "DATASET.VAL_FOLDS", str(args.val_folds)],
                                            prefix=f"beside.{trainer}.fold{fold}.")
        try:
            failures = suite.execute(runs, root, args)
        except suite.launch.LaunchError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    results = {name: {fold: suite.collect(folders[name, fold], shots, [args.trainer], args.datasets, args.seeds,
                                          config=args.config).get(args.trainer, {}) for fold in args.folds}
               for name in names}
    for label, trainer in beside.items():
        results[label] = {fold: suite.collect(folders[label, fold], shots, [trainer], args.datasets, args.seeds,
                                              config="").get(trainer, {}) for fold in args.folds}
    rows = rank(results, names + list(beside), args.datasets, args.seeds, args.folds)
    elapsed = time.time() - started
    footer = (f"{args.trainer} on {', '.join(args.datasets)}; validation folds {' '.join(map(str, args.folds))} of "
              f"{args.val_folds}; seeds "
              f"{' '.join(map(str, args.seeds))}; {shots} shots{'; overrides ' + ' '.join(opts) if opts else ''}. "
              f"Means over the (fold, seed, dataset) cells every setting finished, on held-out training images (no test "
              f"image, no new class). "
              f"Run on {datetime.date.today()} at commit {suite.commit()} on {suite.machine()}; {elapsed / 60:.1f} min.")
    text = markdown(rows, names[0], footer)
    out = args.out or root
    os.makedirs(out, exist_ok=True)
    record = {"trainer": args.trainer, "runs": root, "grid": [[k, v] for k, v in grid], "beside": args.beside,
              "datasets": args.datasets,
              "seeds": args.seeds, "folds": args.folds, "overrides": opts, "reference": names[0], "ranking": rows,
              "failures": failures, "date": str(datetime.date.today()), "commit": suite.commit(),
              "machine": suite.machine(), "elapsed_s": round(elapsed, 1)}
    return suite.report(out, "sweep", text, record, failures)


if __name__ == "__main__":
    sys.exit(main())
