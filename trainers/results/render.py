"""Writing tables: terminal text, markdown, LaTeX, CSV, and the files of an output folder."""
import csv
import html
import os
import re

from common.fileio import atomic_open, atomic_write_text

from .plots import plot_base2new, plot_fewshot
from .reading import INCOMPLETE_MARK, label_of
from .statistics import Stat


def format_cell(cell, digits, style="text"):
    """A cell as ``style`` ("text", "markdown" or "latex") writes it; names (which come from records) escaped."""
    if not isinstance(cell, Stat):
        return {"latex": escape_latex, "markdown": escape_markdown}.get(style, str)(cell)
    if cell.mean is None:
        return "-"
    text = f"{cell.mean:.{digits}f}"
    if not cell.published and cell.std is not None and len(cell.seeds) > 1:
        text += (r" $\pm$ " if style == "latex" else " ± ") + f"{cell.std:.{digits}f}"
    if not cell.published and not cell.complete:
        text += "$^*$" if style == "latex" else INCOMPLETE_MARK
    return text


LINE_BREAKS = re.compile("[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]")  # what ends a line (str.splitlines)
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                 **{c: "\\" + c for c in "&%$#_{}"}}


def one_line(text):
    """The text with each line break a space: a name cannot end a comment, a table row or a list item."""
    return LINE_BREAKS.sub(" ", str(text))


def escape_latex(text):
    """Text as LaTeX typesets it: every special character escaped, line breaks and control characters spaces."""
    text = re.sub(r"[\x00-\x1f\x7f]", " ", one_line(text))
    return re.sub(r"[\\&%$#_{}~^]", lambda match: LATEX_SPECIAL[match.group()], text)


def escape_markdown(text):
    """Text for a markdown table cell or list item: ``|`` and ``\\`` escaped, ``< > &`` as HTML entities (no raw
    HTML), line breaks spaces."""
    return html.escape(one_line(text).replace("\\", "\\\\"), quote=False).replace("|", "\\|")


def code_span(text):
    """A markdown code span of the text (on one line) that none of its backticks can close."""
    text = one_line(text)
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    if not longest:
        return f"`{text}`"
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}"


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


def tabulated(table, digits, tablefmt, style="text"):
    from tabulate import tabulate

    header = [format_cell(h, digits, style) for h in table.header]
    return tabulate(rendered_rows(table, digits, style), headers=header, tablefmt=tablefmt, disable_numparse=True)


def to_text(table, digits=2):
    body = tabulated(table, digits, "simple")
    return "\n".join([table.title, "", body, "", *table.notes, *missing_lines(table)]) + "\n"


def to_markdown(table, digits=2):
    body = tabulated(table, digits, "github", "markdown")
    notes = [f"- {escape_markdown(note)}" for note in table.notes]
    missing = [f"- {escape_markdown(m.method)}, {escape_markdown(label_of(m.dataset))}: {escape_markdown(m.what)}, "
               f"seeds {', '.join(map(str, m.seeds))}" + (f" ({code_span(m.command)})" if m.command else "")
               for m in table.missing]
    text = [f"### {escape_markdown(table.title)}", "", body, ""]
    if notes:
        text += notes + [""]
    if missing:
        text += [f"**Missing runs ({len(missing)})**", ""] + missing + [""]
    return "\n".join(text)


def to_latex(table, digits=2):
    columns = "ll" if table.header[0] == "Dataset" else "l"
    columns += "c" * (len(table.header) - len(columns))
    lines = [f"% {one_line(table.title)}", f"\\begin{{tabular}}{{{columns}}}", "\\toprule",
             " & ".join(escape_latex(h) for h in table.header) + r" \\", "\\midrule"]
    previous = None
    for row in rendered_rows(table, digits, "latex"):
        if table.header[0] == "Dataset" and row[0] and previous is not None:
            lines.append("\\midrule")
        previous = row[0] or previous
        lines.append(" & ".join(row) + r" \\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    lines += [f"% {one_line(note)}" for note in table.notes]  # in a comment, only a line break is live
    lines += [one_line(f"% missing: {m.method}, {label_of(m.dataset)}: {m.what}, seeds {', '.join(map(str, m.seeds))}")
              for m in table.missing]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("table", "dataset", "method", "kind", "metric", "shots", "mean", "std", "n_seeds", "seeds", "complete",
              "source")


def write_csv(table, path):
    with atomic_open(path, "w", newline="") as handle:
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
            atomic_write_text(path, render(table, digits))
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
