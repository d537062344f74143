"""The benchmark tables (base-to-new, cross-dataset, domain generalisation, few-shot) built from records."""
import os
import re
import shlex
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from . import published
from .reading import (
    BENCHMARK,
    INCOMPLETE_MARK,
    ORDER,
    TRANSFER_SOURCES,
    XD_SOURCE,
    TablesError,
    assign_methods,
    dataset_keys,
    label_of,
    protocol_of,
)
from .statistics import Stat, average_over, harmonic_mean, harmonic_stat, summarise


@dataclass
class Missing:
    method: str
    dataset: str
    what: str
    seeds: tuple
    command: str = ""

    def __str__(self):
        seeds = ", ".join(map(str, self.seeds))
        text = f"{self.method}, {label_of(self.dataset)}: {self.what}, seed{'s' if len(self.seeds) > 1 else ''} {seeds}"
        return text + (f"\n    run: {self.command}" if self.command else "")


@dataclass
class Table:
    name: str
    title: str
    header: list
    rows: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    tidy: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    shots: list = field(default_factory=list)  # fewshot: the shot count of each accuracy column


@dataclass
class Options:
    seeds: tuple = None  # expected seeds; default: every seed found in the protocol's records
    datasets: tuple = None  # registered names; default: every dataset found
    methods: tuple = ()  # MethodSpec
    shots: int = None  # base2new / xd / dg: which shot count, when several were run
    shots_list: tuple = None  # fewshot: expected shot counts; default: every count found
    published: bool = True
    digits: int = 2


class Protocol:
    """The records of one protocol, with what is expected of them (methods, seeds, datasets)."""

    def __init__(self, name, records, options, keys):
        self.name = name
        self.options = options
        self.keys = keys
        stored = "xd" if name == "dg" else name
        records = [r for r in records if protocol_of(r) == stored]
        if options.seeds is not None:
            records = [r for r in records if r["seed"] in options.seeds]
        records, self.methods = assign_methods(records, options.methods)
        if name != "fewshot":
            records = self.one_shot_count(records)
        self.records = records
        counts = {r["shots"] for r in records}
        self.shots = counts.pop() if len(counts) == 1 else ""  # base2new, xd, dg: one count (see one_shot_count)
        self.seeds = tuple(options.seeds) if options.seeds is not None else tuple(sorted({r["seed"] for r in records}))
        self.trainer = {r["_method"]: r["trainer"] for r in records}
        self.check_unique()

    def one_shot_count(self, records):
        counts = sorted({r["shots"] for r in records})
        if self.options.shots is not None:
            return [r for r in records if r["shots"] == self.options.shots]
        if len(counts) > 1:
            raise TablesError(
                f"{self.name}: records of several shot counts ({', '.join(map(str, counts))}); choose one with --shots."
            )
        return records

    def check_unique(self):
        seen = defaultdict(list)
        for r in self.records:
            seen[(r["_method"], r["dataset"], r["subsample"], r["shots"], r["seed"])].append(r)
        for (method, dataset, subsample, shots, seed), group in seen.items():
            if len(group) > 1:
                where = "\n  ".join(os.path.dirname(r["_path"]) + f" (config {r.get('config')})" for r in group)
                raise TablesError(
                    f"{self.name}: {len(group)} records for {method} on {dataset} ({subsample} classes, {shots} shots, "
                    f"seed {seed}):\n  {where}\nTell them apart with --method LABEL=TRAINER:CONFIG (one per config), "
                    "or point the tool at one output folder."
                )

    def datasets(self, allowed=None):
        found = {r["dataset"] for r in self.records}
        chosen = list(self.options.datasets) if self.options.datasets is not None else sorted(
            found, key=lambda d: (ORDER.get(d, len(ORDER)), d))
        return [d for d in chosen if allowed is None or allowed(d)]

    def by_seed(self, method, dataset, **match):
        return {
            r["seed"]: r["accuracy"] for r in self.records
            if r["_method"] == method and r["dataset"] == dataset and all(r[k] == v for k, v in match.items())
        }

    def config_hint(self, method):
        """The config to name in a run command: the method's only config, else none (each run's default)."""
        configs = {r.get("config") for r in self.records if r["_method"] == method}
        return configs.pop() if len(configs) == 1 else ""

    def command(self, script, method, datasets, seeds, env=()):
        """The shell command that makes the runs: every word quoted (names come from records, which anyone can
        write); ``env``: ``NAME=value`` assignments put first."""
        keys = [self.keys.get(d) for d in datasets]
        if None in keys or method not in self.trainer:
            return ""
        assignments = list(env)
        if self.name != "fewshot" and self.shots != 16:
            assignments.append(f"SHOTS={self.shots}")
        assignments += [f"SEEDS={' '.join(map(str, seeds))}", f"DATASETS={' '.join(keys)}"]
        words = [assignment(*text.split("=", 1)) for text in assignments]
        words += ["bash", shlex.quote(f"scripts/{script}"), shlex.quote(self.trainer[method])]
        config = self.config_hint(method)
        return " ".join(words + ([shlex.quote(config)] if config else []))


def assignment(name, value):
    """``NAME=value`` as a shell word: a list of plain words in double quotes (``SEEDS="1 2"``, as the docs write
    them), anything else quoted by shlex."""
    if " " in value and re.fullmatch(r"[\w@%+=:,./ -]+", value, re.ASCII):
        return f'{name}="{value}"'
    return f"{name}={shlex.quote(value)}"


def interleave(methods, trainer_of_method, papers):
    """Measured and published rows in one order: each paper's row right after the (last) method measured with the
    trainer it corresponds to; the papers of trainers not measured at the end."""
    last_of_trainer = {trainer_of_method[method]: method for method in methods}
    order = []
    for method in methods:
        order.append(("measured", method))
        if last_of_trainer[trainer_of_method[method]] == method:
            order += [("published", p) for p in papers if published.TRAINER_OF.get(p) == trainer_of_method[method]]
    shown = {name for kind, name in order if kind == "published"}
    return order + [("published", paper) for paper in papers if paper not in shown]


def tidy_row(table, dataset, method, stat, metric, shots="", source=""):
    return {
        "table": table, "dataset": label_of(dataset), "method": method,
        "kind": "published" if stat.published else "measured", "metric": metric, "shots": shots,
        "mean": "" if stat.mean is None else repr(float(stat.mean)),
        "std": "" if stat.std is None else repr(float(stat.std)),
        "n_seeds": "" if stat.published else len(stat.seeds), "seeds": " ".join(map(str, stat.seeds)),
        "complete": stat.complete, "source": source,
    }


def published_label(paper):
    return f"{paper} (published)"


# ----- base to new
def base2new_table(protocol):
    opts = protocol.options
    datasets = protocol.datasets()
    methods = protocol.methods
    seeds = protocol.seeds
    # papers with per-dataset numbers, then those with only an 11-dataset average (shown on the average row alone)
    papers = [*published.BASE2NEW, *(p for p in published.BASE2NEW_AVERAGE if p not in published.BASE2NEW)]
    papers = papers if opts.published else []
    order = interleave(methods, protocol.trainer, papers)
    table = Table("base2new", f"Base-to-new generalisation ({shots_text(protocol)}), accuracy (%)",
                  ["Dataset", "Method", "Base", "New", "HM"])
    source = published.SOURCES["base2new"]
    per = {}  # method -> part -> dataset -> seed -> value
    stats = {}
    for dataset in datasets:
        for kind, method in order:
            if kind == "published":
                values = published.BASE2NEW.get(method, {}).get(dataset)
                if values is None:
                    continue
                cells = [Stat(v, None, (), True, True) for v in values]
                label = published_label(method)
            else:
                base = protocol.by_seed(method, dataset, subsample="base")
                new = protocol.by_seed(method, dataset, subsample="new")
                per.setdefault(method, {"base": {}, "new": {}})
                per[method]["base"][dataset], per[method]["new"][dataset] = base, new
                base_stat, new_stat = summarise(base, seeds), summarise(new, seeds)
                hm_stat = harmonic_stat(base_stat, new_stat, base, new)
                stats[(method, dataset)] = (base_stat, new_stat)
                cells = [base_stat, new_stat, hm_stat]
                label = method
                for part, stat in (("base", base_stat), ("new", new_stat)):
                    lacking = tuple(s for s in seeds if s not in stat.seeds)
                    if lacking:
                        what = "base classes (train_base)" if part == "base" else "new classes (test_new)"
                        table.missing.append(Missing(method, dataset, f"no {what}", lacking,
                                                     protocol.command("base2new.sh", method, [dataset], lacking)))
            table.rows.append([label_of(dataset), label, *cells])
            for metric, stat in zip(("base", "new", "hm"), cells):
                table.tidy.append(tidy_row("base2new", dataset, label, stat, metric, protocol.shots,
                                           source if stat.published else ""))
    # The average over the datasets: Base and New averaged, HM of those averages (as the papers).
    average_name = average_label(datasets)
    for kind, method in order:
        if kind == "published":
            cells = published_average(method, datasets)
            if cells is None:
                continue
            label = published_label(method) + ("" if set(datasets) == set(BENCHMARK) else " [averaged here]")
        else:
            base_stat, base_seed = average_over(per[method]["base"], {d: stats[(method, d)][0] for d in datasets},
                                                seeds)
            new_stat, new_seed = average_over(per[method]["new"], {d: stats[(method, d)][1] for d in datasets}, seeds)
            hm_stat = harmonic_stat(base_stat, new_stat, base_seed, new_seed)
            cells, label = [base_stat, new_stat, hm_stat], method
        table.rows.append([average_name, label, *cells])
        row_source = published.BASE2NEW_AVERAGE_SOURCES.get(method, source) if kind == "published" else ""
        for metric, stat in zip(("base", "new", "hm"), cells):
            table.tidy.append(tidy_row("base2new", "Average", label, stat, metric, protocol.shots, row_source))
    table.notes.append("HM: harmonic mean of the mean Base and the mean New; on the average rows, of the averaged Base "
                       "and New. Spreads of averages are over the seeds that have every dataset.")
    if papers:
        table.notes.append(f"(published): {source}.")
        for paper in papers:
            if paper in published.BASE2NEW_AVERAGE_SOURCES and any(row[1].startswith(published_label(paper))
                                                                   for row in table.rows):
                table.notes.append(f"{published_label(paper)}: {published.BASE2NEW_AVERAGE_SOURCES[paper]}.")
        if set(datasets) != set(BENCHMARK):
            table.notes.append("[averaged here]: the published per-dataset numbers, averaged over this table's "
                               "datasets.")
    return table


def average_label(datasets):
    return f"Average ({len(datasets)} dataset{'s' if len(datasets) != 1 else ''})"


def published_average(paper, datasets):
    if set(datasets) == set(BENCHMARK):
        return [Stat(v, None, (), True, True) for v in published.BASE2NEW_AVERAGE[paper]]
    values = [published.BASE2NEW.get(paper, {}).get(d) for d in datasets]
    if not datasets or None in values:
        return None
    base = statistics.fmean(v[0] for v in values)
    new = statistics.fmean(v[1] for v in values)
    return [Stat(x, None, (), True, True) for x in (base, new, harmonic_mean(base, new))]


def shots_text(protocol):
    return f"{protocol.shots} shots"


# ----- cross-dataset and domain generalisation
def transfer_source(protocol):
    """The source dataset of a cross-dataset protocol's records: the one whose targets they hold (ImageNet unless
    only the world's are there). Two sources in one folder are refused: their averages would mix."""
    found = {r["dataset"] for r in protocol.records}
    sources = [s for s, (xd, dg, _) in TRANSFER_SOURCES.items() if found & {s, *xd, *dg}]
    if len(sources) > 1:
        raise TablesError(f"{protocol.name}: records of several cross-dataset sources ({', '.join(sources)}); point the "
                          "tool at the output folder of one of them.")
    return sources[0] if sources else XD_SOURCE


def transfer_table(protocol, name):
    opts = protocol.options
    is_dg = name == "dg"
    source = transfer_source(protocol)
    xd_targets, dg_targets, source_key = TRANSFER_SOURCES[source]
    targets = protocol.datasets(lambda d: d in dg_targets if is_dg else (d != source and d not in dg_targets))
    if not targets:
        return None
    seeds = protocol.seeds
    paper_rows = published.DOMAIN_GENERALIZATION if is_dg else published.CROSS_DATASET
    paper_average = published.DOMAIN_GENERALIZATION_AVERAGE if is_dg else published.CROSS_DATASET_AVERAGE
    standard = dg_targets if is_dg else xd_targets
    published_source = published.SOURCES[name]
    papers = list(paper_rows) if opts.published and source == XD_SOURCE else []
    title = ("Domain generalisation" if is_dg else "Cross-dataset transfer") + \
        f" (trained on {label_of(source)}, {shots_text(protocol)}), accuracy (%)"
    table = Table(name, title, ["Method", f"{label_of(source)} (source)", *map(label_of, targets), "Average"])
    columns = [source, *targets]
    env = () if source == XD_SOURCE else (f"XD_SOURCE={source_key}",)
    script = "dg.sh" if is_dg else "xd.sh"
    for kind, method in interleave(protocol.methods, protocol.trainer, papers):
        if kind == "published":
            values = [paper_rows[method].get(d) for d in columns]
            if set(targets) == set(standard):
                average = paper_average[method]
            elif None not in values[1:]:
                average = statistics.fmean(values[1:])
            else:
                average = None
            cells = [Stat(v, None, (), True, True) if v is not None else Stat(published=True) for v in values]
            cells.append(Stat(average, None, (), True, True) if average is not None else Stat(published=True))
            computed = set(targets) != set(standard) and average is not None
            label = published_label(method) + (" [averaged here]" if computed else "")
        else:
            per = {d: protocol.by_seed(method, d, subsample="all") for d in columns}
            stats = {d: summarise(per[d], seeds) for d in columns}
            average, _ = average_over({d: per[d] for d in targets}, stats, seeds)
            cells, label = [stats[d] for d in columns] + [average], method
            lacking_source = tuple(s for s in seeds if s not in stats[source].seeds)
            if lacking_source:
                table.missing.append(Missing(method, source, f"no {label_of(source)} model (xd_train)", lacking_source,
                                             protocol.command(script, method, targets, lacking_source, env)))
            for d in targets:
                lacking = tuple(s for s in seeds if s not in stats[d].seeds)
                if lacking:
                    table.missing.append(Missing(method, d, "no evaluation (xd_test)", lacking,
                                                 protocol.command(script, method, [d], lacking, env)))
        table.rows.append([label, *cells])
        for d, stat in zip([*columns, "Average"], cells):
            if stat.mean is not None or not stat.published:
                table.tidy.append(tidy_row(name, d, label, stat, "accuracy", protocol.shots,
                                           published_source if stat.published else ""))
    table.notes.append(f"Average: over the {len(targets)} target dataset{'s' if len(targets) != 1 else ''} "
                       "(the source is not in it).")
    if papers:
        table.notes.append(f"(published): {published_source}.")
    return table


# ----- few-shot
def shots_order(shots):
    return (shots < 0, shots)


def shots_label(shots):
    if shots == 0:
        return "zero-shot"
    return "all images" if shots < 0 else f"{shots} shot{'s' if shots > 1 else ''}"


def fewshot_table(protocol):
    opts = protocol.options
    datasets = protocol.datasets()
    seeds = protocol.seeds
    # Zero-shot methods ran once, as 0 shots; the others are expected at every shot count any of them ran
    # (a negative count is a run on all training images).
    zero_shot = {m for m in protocol.methods if all(r["shots"] == 0 for r in protocol.records if r["_method"] == m)}
    found = {r["shots"] for r in protocol.records if r["shots"] != 0}
    learned = tuple(opts.shots_list) if opts.shots_list is not None else tuple(sorted(found, key=shots_order))
    expected = {m: ((0,) if m in zero_shot else learned) for m in protocol.methods}
    columns = sorted({k for m in protocol.methods for k in expected[m]}, key=shots_order)
    header = ["Dataset", "Method", *map(shots_label, columns)]
    table = Table("fewshot", "Few-shot learning (all classes), accuracy (%)", header, shots=columns)
    per = defaultdict(dict)  # (method, shots) -> dataset -> seed -> value
    stats = defaultdict(dict)
    for dataset in datasets:
        for method in protocol.methods:
            cells = []
            for k in columns:
                if k not in expected[method]:
                    cells.append("")
                    continue
                values = protocol.by_seed(method, dataset, shots=k)
                per[(method, k)][dataset] = values
                stat = stats[(method, k)][dataset] = summarise(values, seeds)
                cells.append(stat)
                table.tidy.append(tidy_row("fewshot", dataset, method, stat, "accuracy", shots=k))
                lacking = tuple(s for s in seeds if s not in stat.seeds)
                if lacking:
                    env = [] if k == 0 else [f"SHOTS_LIST={k}"]
                    what = f"no {k}-shot run" if k > 0 else f"no {shots_label(k)} run"
                    command = protocol.command("fewshot.sh", method, [dataset], lacking, env)
                    table.missing.append(Missing(method, dataset, what, lacking, command))
            table.rows.append([label_of(dataset), method, *cells])
    for method in protocol.methods:
        cells = []
        for k in columns:
            if k not in expected[method]:
                cells.append("")
                continue
            stat, _ = average_over(per[(method, k)], stats[(method, k)], seeds)
            cells.append(stat)
            table.tidy.append(tidy_row("fewshot", "Average", method, stat, "accuracy", shots=k))
        table.rows.append([average_label(datasets), method, *cells])
    if not opts.published:
        return table
    table.notes.append("No published rows: CoOp's paper gives its few-shot results as curves, not numbers.")
    return table


def build_tables(records, protocols, options, keys=None):
    """The tables of ``protocols`` that have records: ``(tables, errors)`` (an error stops only its protocol)."""
    keys = keys or dataset_keys()
    tables, errors = [], []
    for name in protocols:
        try:
            protocol = Protocol(name, records, options, keys)
            if not protocol.records:
                continue
            if name == "base2new":
                table = base2new_table(protocol)
            elif name in ("xd", "dg"):
                table = transfer_table(protocol, name)
            else:
                table = fewshot_table(protocol)
        except TablesError as err:
            errors.append(str(err))
            continue
        if table is not None:
            if any(isinstance(c, Stat) and not c.complete and not c.published for row in table.rows for c in row):
                seeds = " ".join(map(str, protocol.seeds))
                table.notes.append(f"{INCOMPLETE_MARK} mean over fewer runs than expected (seeds {seeds}); the missing "
                                   "runs are listed below the table.")
            tables.append(table)
    return tables, errors
