"""What training logged, epoch by epoch, averaged over runs: pseudo-new accuracy against epochs for several trainers or
settings side by side (validation runs made with ``TRAIN.TRACK_NEW True``, e.g. by ``scripts/sweep.py``).

    R=$OUTPUT/overrides_<hash>/sweep
    python3 scripts/curves.py --runs CoOp=$R/CoOp/default --runs KgCoOp=$R/KgCoOp/default \\
        --runs DualMIPrompt=$R/DualMIPrompt/default --out forgetting
    python3 scripts/curves.py --runs DualMIPrompt=$R/DualMIPrompt/default --keys cos_soft_hand kappa_text --out terms

Each ``--runs LABEL=FOLDER`` names a folder holding training runs (``.../train_base/<dataset>/.../seed<k>/`` with
their ``log.txt``; a validation fold's runs under ``fold<k>/``). A run is a cell (fold, dataset, seed); every label is
averaged over the cells that all labels have, so that no curve is drawn on easier cells. The epoch lines of a log
(``epoch [e/E] averages: ...``, and ``epoch [0/E] tracked: ...`` before the first step) give, per epoch, every
quantity the run logged; a resumed run's later log wins for an epoch logged twice.

Writes ``<out>.md`` (the ``--keys`` at ``--epochs``, per label), ``<out>.json`` (every quantity, every epoch, mean and
standard deviation over the cells) and ``<out>.png`` (one panel per key, three to a row, one curve per label;
zero-shot CLIP's accuracy on the same images, from the logs' epoch 0, as a dashed line where a key has one).
"""
import argparse
import datetime
import glob
import json
import os
import re
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import suite  # noqa: E402  (also puts the repository on sys.path)

from common.fileio import atomic_write_text  # noqa: E402
from trainers.results.plots import plain, save_figure  # noqa: E402

DEFAULT_KEYS = ("track_new_acc", "track_base_acc", "track_new_cos")
DEFAULT_EPOCHS = (0, 1, 2, 5, 10, 20, 30, 40, 50)
# The zero-shot accuracy that an accuracy key is drawn beside (logged once, before the first step).
ZERO_SHOT = {"track_new_acc": "zs_new_acc", "track_base_acc": "zs_base_acc"}
EPOCH_LINE = re.compile(r"^epoch \[(\d+)/(\d+)\] (?:averages|tracked): (.*)$")


class CurvesError(ValueError):
    """A command line or a folder this script cannot use; the message says what to change."""


def parse_log(text):
    """``{epoch: {name: value}}`` from a training log's epoch lines."""
    epochs = {}
    for line in text.splitlines():
        match = EPOCH_LINE.match(line.strip())
        if not match:
            continue
        words = match.group(3).split()
        values = {}
        for name, value in zip(words[0::2], words[1::2]):
            try:
                values[name] = float(value)
            except ValueError:
                continue
        epochs.setdefault(int(match.group(1)), {}).update(values)
    return epochs


def cell_of(run_folder):
    """``(fold, dataset, seed)`` of a run folder ``.../[fold<k>/]...train_base/<dataset>/.../seed<s>``; None when
    the path does not look like one."""
    parts = os.path.normpath(run_folder).split(os.sep)
    if "train_base" not in parts or not re.fullmatch(r"seed\d+", parts[-1]):
        return None
    at = len(parts) - 1 - parts[::-1].index("train_base")
    if at + 1 >= len(parts) - 1:
        return None
    folds = [p for p in parts[:at] if re.fullmatch(r"fold\d+", p)]
    return (folds[-1] if folds else "", parts[at + 1], parts[-1])


def read_runs(folder):
    """``{cell: {epoch: {name: value}}}`` for every training run under ``folder``."""
    runs = {}
    for log in sorted(glob.glob(os.path.join(glob.escape(folder), "**", "log.txt*"), recursive=True)):
        cell = cell_of(os.path.dirname(log))
        if cell is None:
            continue
        with open(log, errors="replace") as handle:
            for epoch, values in parse_log(handle.read()).items():
                runs.setdefault(cell, {}).setdefault(epoch, {}).update(values)
    return runs


def summarise(runs, cells):
    """``{epoch: {name: {"mean", "sd", "n"}}}`` over ``cells``, for every (epoch, name) that all of them logged."""
    epochs = set.intersection(*(set(runs[c]) for c in cells)) if cells else set()
    found = {}
    for epoch in sorted(epochs):
        names = set.intersection(*(set(runs[c][epoch]) for c in cells))
        found[epoch] = {}
        for name in sorted(names):
            values = [runs[c][epoch][name] for c in cells]
            found[epoch][name] = {"mean": statistics.fmean(values), "sd": statistics.pstdev(values), "n": len(values)}
    return found


def markdown(summaries, keys, epochs, footer):
    lines = []
    for label, summary in summaries.items():
        shown = [e for e in epochs if e in summary]
        present = [k for k in keys if any(k in summary[e] for e in shown)]
        if not shown or not present:
            continue
        lines += [f"**{label}**", "", "| epoch | " + " | ".join(present) + " |", "|---" * (len(present) + 1) + "|"]
        for epoch in shown:
            cells = [f"{summary[epoch][k]['mean']:.3f}" if k in summary[epoch] else "-" for k in present]
            lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
        zero = {k: summary[min(summary)].get(ZERO_SHOT.get(k, ""), {}).get("mean") for k in present}
        if any(v is not None for v in zero.values()):
            lines.append("| zero-shot | " + " | ".join("-" if v is None else f"{v:.3f}" for v in zero.values()) + " |")
        lines.append("")
    return "\n".join(lines) + footer + "\n"


def plot(summaries, keys, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4.0 * rows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    for ax, key in zip(axes.flat, keys):
        zeros = {}
        for index, (label, summary) in enumerate(summaries.items()):
            epochs = [e for e in sorted(summary) if key in summary[e]]
            if not epochs:
                continue
            ax.plot(epochs, [summary[e][key]["mean"] for e in epochs], color=f"C{index}", label=plain(label))
            zero = summary[min(summary)].get(ZERO_SHOT.get(key, ""))
            if zero is not None:
                zeros[f"C{index}"] = zero["mean"]
        # The labels share their cells, so their zero-shot accuracies are one number: one grey line, else one each.
        same = len({round(value, 9) for value in zeros.values()}) == 1
        for colour, value in (list(zeros.items())[:1] if same else zeros.items()):
            ax.axhline(value, color="grey" if same else colour, linestyle="--", linewidth=0.9)
        ax.set_xlabel("epoch")
        ax.set_title(plain(key) + (" (dashed: zero-shot CLIP)" if key in ZERO_SHOT else ""), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def parse_runs(specs):
    labelled = {}
    for spec in specs:
        label, sep, folder = spec.partition("=")
        if not sep or not label or not folder:
            raise CurvesError(f"--runs takes LABEL=FOLDER; got {spec!r}")
        if label in labelled:
            raise CurvesError(f"--runs names the label {label!r} twice")
        if not os.path.isdir(folder):
            raise CurvesError(f"--runs {label}: {folder} is not a folder")
        labelled[label] = folder
    return labelled


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", action="append", required=True, metavar="LABEL=FOLDER")
    parser.add_argument("--keys", nargs="+", default=list(DEFAULT_KEYS), help="the quantities to tabulate and plot")
    parser.add_argument("--epochs", nargs="+", type=int, default=list(DEFAULT_EPOCHS), help="the table's epochs")
    parser.add_argument("--out", required=True, help="path stem of the .md, .json and .png written")
    args = parser.parse_args(argv)
    try:
        folders = parse_runs(args.runs)
        runs = {label: read_runs(folder) for label, folder in folders.items()}
        for label, found in runs.items():
            if not found:
                raise CurvesError(f"--runs {label}: no training log under {folders[label]} (runs under "
                                  ".../train_base/<dataset>/.../seed<k>/log.txt)")
        cells = sorted(set.intersection(*(set(found) for found in runs.values())))
        if not cells:
            raise CurvesError("the labels share no (fold, dataset, seed) cell: give folders of the same sweep design")
    except CurvesError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summaries = {label: summarise(found, cells) for label, found in runs.items()}
    datasets = sorted({c[1] for c in cells})
    footer = (f"Means over {len(cells)} (fold, dataset, seed) cells shared by every label ({', '.join(datasets)}). "
              f"Drawn on {datetime.date.today()} at commit {suite.commit()} from: "
              + "; ".join(f"{label} = {folder}" for label, folder in folders.items()) + ".")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    text = markdown(summaries, args.keys, args.epochs, footer)
    atomic_write_text(args.out + ".md", text)
    record = {"runs": folders, "cells": [list(c) for c in cells], "keys": args.keys,
              "curves": {label: {str(e): v for e, v in s.items()} for label, s in summaries.items()},
              "date": str(datetime.date.today()), "commit": suite.commit()}
    atomic_write_text(args.out + ".json", json.dumps(record, indent=2) + "\n")
    plot(summaries, args.keys, args.out + ".png")
    print(text)
    print(f"Written: {args.out}.md, {args.out}.json, {args.out}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
