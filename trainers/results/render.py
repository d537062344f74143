"""Writing tables: terminal text, markdown, LaTeX, CSV, and the files of an output folder."""
import csv
import os
import re

from .plots import plot_base2new, plot_fewshot
from .reading import INCOMPLETE_MARK, label_of
from .statistics import Stat

def format_cell(cell, digits, style="text"):
    if not isinstance(cell, Stat):
        return escape_latex(cell) if style == "latex" else cell
    if cell.mean is None:
        return "-"
    text = f"{cell.mean:.{digits}f}"
    if not cell.published and cell.std is not None and len(cell.seeds) > 1:
        text += (r" $\pm$ " if style == "latex" else " ± ") + f"{cell.std:.{digits}f}"
    if not cell.published and not cell.complete:
        text += "$^*$" if style == "latex" else INCOMPLETE_MARK
    return text


def escape_latex(text):
    return re.sub(r"([&%$#_{}])", r"\\\1", str(text))


def blank_repeats(rows):
    """The dataset name once per block, as in the papers."""
    out, previous = [], None
    for row in rows:
        first = row[0]
        out.append(["" if first == previous else first, *row[1:]])
        previous = first
    return out


def rendered_rows(table, digits, style):
    rows = [[format_cell(c, digits, style) for c in row] for row in table.rows]
    return blank_repeats(rows) if table.header[0] == "Dataset" else rows


def tabulated(table, digits, tablefmt):
    from tabulate import tabulate

    return tabulate(rendered_rows(table, digits, "text"), headers=table.header, tablefmt=tablefmt,
                    disable_numparse=True)


def to_text(table, digits=2):
    body = tabulated(table, digits, "simple")
    return "\n".join([table.title, "", body, "", *table.notes, *missing_lines(table)]) + "\n"


def to_markdown(table, digits=2):
    body = tabulated(table, digits, "github")
    notes = [f"- {note}" for note in table.notes]
    missing = [f"- {m.method}, {label_of(m.dataset)}: {m.what}, seeds {', '.join(map(str, m.seeds))}"
               + (f" (`{m.command}`)" if m.command else "") for m in table.missing]
    text = [f"### {table.title}", "", body, ""]
    if notes:
        text += notes + [""]
    if missing:
        text += [f"**Missing runs ({len(missing)})**", ""] + missing + [""]
    return "\n".join(text)


def to_latex(table, digits=2):
    columns = "ll" if table.header[0] == "Dataset" else "l"
    columns += "c" * (len(table.header) - len(columns))
    lines = [f"% {table.title}", f"\\begin{{tabular}}{{{columns}}}", "\\toprule",
             " & ".join(escape_latex(h) for h in table.header) + r" \\", "\\midrule"]
    previous = None
    for row in rendered_rows(table, digits, "latex"):
        if table.header[0] == "Dataset" and row[0] and previous is not None:
            lines.append("\\midrule")
        previous = row[0] or previous
        lines.append(" & ".join(row) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    lines += [f"% {note}" for note in table.notes]
    lines += [f"% missing: {m.method}, {label_of(m.dataset)}: {m.what}, seeds {', '.join(map(str, m.seeds))}"
              for m in table.missing]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("table", "dataset", "method", "kind", "metric", "shots", "mean", "std", "n_seeds", "seeds", "complete",
              "source")


def write_csv(table, path):
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(table.tidy)


def missing_lines(table):
    if not table.missing:
        return []
    return ["", f"Missing runs ({len(table.missing)}):", *(f"  {m}" for m in table.missing)]



def write_outputs(tables, out_dir, digits=2, figures=True):
    """``<table>.md``, ``.tex``, ``.csv`` for each table, and the figures; returns the paths written."""
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for table in tables:
        for suffix, render in ((".md", to_markdown), (".tex", to_latex)):
            path = os.path.join(out_dir, table.name + suffix)
            with open(path, "w") as handle:
                handle.write(render(table, digits))
            written.append(path)
        path = os.path.join(out_dir, table.name + ".csv")
        write_csv(table, path)
        written.append(path)
        plot = {"base2new": plot_base2new, "fewshot": plot_fewshot}.get(table.name)
        if figures and plot is not None:
            path = os.path.join(out_dir, table.name + ".png")
            plot(table, path)
            written.append(path)
    return written
