"""The figures: Base / New / HM per dataset, and accuracy against shots."""
import math

from common.fileio import atomic_open

from .statistics import Stat


def plain(text):
    """A name as matplotlib shows it verbatim: a ``$`` of a record's name would start mathtext (and a malformed
    formula stop the figure)."""
    return str(text).replace("$", r"\$")


def save_figure(fig, path, dpi=120):
    """Save ``fig`` as a PNG through ``atomic_open``: an interrupted save leaves the earlier figure whole."""
    import matplotlib.pyplot as plt

    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=dpi)
    plt.close(fig)


def plot_base2new(table, path):
    """Base / New / HM per dataset (and the average) for each measured method: one panel per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [row for row in table.rows if isinstance(row[2], Stat) and not row[2].published]
    groups = list(dict.fromkeys(row[0] for row in measured))
    methods = list(dict.fromkeys(row[1] for row in measured))
    value = {(row[0], row[1]): row[2:] for row in measured}
    width = 0.8 / max(len(methods), 1)
    fig, axes = plt.subplots(3, 1, figsize=(max(8, 1.1 * len(groups) * max(1, len(methods) / 2)), 10), sharex=True)
    for panel, (ax, metric) in enumerate(zip(axes, ("Base", "New", "HM"))):
        for i, method in enumerate(methods):
            xs, ys, errs = [], [], []
            for j, group in enumerate(groups):
                stat = value.get((group, method), [Stat()] * 3)[panel]
                if stat.mean is not None:
                    xs.append(j + (i - (len(methods) - 1) / 2) * width)
                    ys.append(stat.mean)
                    errs.append(stat.std if stat.std is not None and len(stat.seeds) > 1 else 0.0)
            ax.bar(xs, ys, width, yerr=errs, label=plain(method), capsize=2)
        ax.set_ylabel(f"{metric} accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=min(len(methods), 4), fontsize="small")
    axes[-1].set_xticks(range(len(groups)))
    axes[-1].set_xticklabels([plain(g).replace(" (", "\n(") for g in groups], rotation=45, ha="right")
    axes[0].set_title(plain(table.title))
    fig.tight_layout()
    save_figure(fig, path)


def plot_fewshot(table, path):
    """Accuracy against shots, one panel per dataset and the average; zero-shot methods as a flat line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = table.shots
    groups = list(dict.fromkeys(row[0] for row in table.rows))
    cols = min(4, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    positive = [k for k in shots if k > 0]
    for ax, group in zip(axes.flat, groups):
        for row in (r for r in table.rows if r[0] == group):
            stats = {k: c for k, c in zip(shots, row[2:]) if isinstance(c, Stat) and c.mean is not None}
            points = sorted(k for k in stats if k > 0)
            if points:
                ax.errorbar(points, [stats[k].mean for k in points], marker="o", label=plain(row[1]),
                            yerr=[stats[k].std if len(stats[k].seeds) > 1 else 0.0 for k in points])
            elif 0 in stats and positive:
                ax.plot([min(positive), max(positive)], [stats[0].mean] * 2, "--", label=plain(row[1]))
        ax.set_title(plain(group))
        if positive:
            ax.set_xscale("log", base=2)
            ax.set_xticks(positive, [str(k) for k in positive])
        ax.set_xlabel("shots per class")
        ax.set_ylabel("accuracy (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    save_figure(fig, path)
