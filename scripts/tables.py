"""The benchmark tables, built from the results records (``results.json``) that every evaluation writes; logs are
never read.

    python3 scripts/tables.py output/                      # every protocol found: printed, and saved in output/tables/
    python3 scripts/tables.py output/ --protocol base2new --seeds 1 2 3 --out paper_tables/

Protocols (the ``protocol`` field of each record, set by the protocol scripts):
  base2new  Base / New / HM per dataset for each method, then the average over the datasets (HM of the averages, as
            the papers compute it); mean and standard deviation over seeds.
  xd        cross-dataset transfer: ImageNet (source) and the 10 other datasets, their average.
  dg        domain generalisation: ImageNet (source), ImageNetV2, -Sketch, -A, -R, their average.
  fewshot   accuracy per shot count, per dataset and averaged over the datasets.

A method is a trainer by default; ``--method LABEL=TRAINER:CONFIG[,CONFIG]`` names methods yourself (e.g. two
configs of one trainer side by side). The baselines' published numbers (scripts/published_numbers.py, each with its
source) are extra rows marked "(published)". Runs that are missing (a seed, a dataset, a shot count) are listed with
the command that makes them, and every mean over fewer runs than expected is marked with a *.
Standard deviations are over seeds, population form (numpy's default, as Dassl's parse_test_res.py).
Outputs: the terminal (tabulate), and in --out: <table>.md, <table>.tex, <table>.csv (one row per number), and the
figures base2new.png (Base / New / HM per dataset for each method) and fewshot.png (accuracy against shots).
"""
import argparse
import csv
import json
import math
import os
import re
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

import published_numbers as published  # noqa: E402

RECORD_NAME = "results.json"  # written by trainers/records.py (superseded ones are results-<date>.json)
PROTOCOLS = ("base2new", "xd", "dg", "fewshot")
REQUIRED_FIELDS = ("dataset", "trainer", "seed", "subsample", "shots", "accuracy")

# (registered DATASET.NAME, key of configs/datasets/<key>.yaml, label in the tables), in the papers' order.
DATASET_CATALOGUE = (
    ("ImageNet", "imagenet", "ImageNet"),
    ("Caltech101", "caltech101", "Caltech101"),
    ("OxfordPets", "oxford_pets", "OxfordPets"),
    ("StanfordCars", "stanford_cars", "StanfordCars"),
    ("OxfordFlowers", "oxford_flowers", "Flowers102"),
    ("Food101", "food101", "Food101"),
    ("FGVCAircraft", "fgvc_aircraft", "FGVCAircraft"),
    ("SUN397", "sun397", "SUN397"),
    ("DescribableTextures", "dtd", "DTD"),
    ("EuroSAT", "eurosat", "EuroSAT"),
    ("UCF101", "ucf101", "UCF101"),
    ("ImageNetV2", "imagenetv2", "ImageNetV2"),
    ("ImageNetSketch", "imagenet_sketch", "ImageNet-Sketch"),
    ("ImageNetA", "imagenet_a", "ImageNet-A"),
    ("ImageNetR", "imagenet_r", "ImageNet-R"),
)
ORDER = {name: i for i, (name, _, _) in enumerate(DATASET_CATALOGUE)}
LABEL = {name: label for name, _, label in DATASET_CATALOGUE}
BENCHMARK = tuple(name for name, _, _ in DATASET_CATALOGUE[:11])
XD_SOURCE = "ImageNet"
XD_TARGETS = BENCHMARK[1:]
DG_TARGETS = tuple(name for name, _, _ in DATASET_CATALOGUE[11:])
# The cross-dataset sources: (its cross-dataset targets, its domain-generalisation targets, the scripts' XD_SOURCE).
# The embedded world's model transfers to the suite's other datasets and to the world drawn in three other styles.
TRANSFER_SOURCES = {
    XD_SOURCE: (XD_TARGETS, DG_TARGETS, "imagenet"),
    "World": (("WorldShapes", "WorldTextures", "WorldCounts", "WorldSigns"), ("WorldSketch", "WorldMosaic", "WorldNeon"),
              "world"),
}
# The world's datasets follow the real ones, in the suite's order.
ORDER.update({name: len(ORDER) + i for i, name in enumerate(("World", *TRANSFER_SOURCES["World"][0],
                                                              *TRANSFER_SOURCES["World"][1]))})
# Methods appear in this order (then the others alphabetically) unless --method gives an order.
TRAINER_ORDER = ("ZeroshotCLIP", "ZeroshotCLIP2", "CoOp", "CoCoOp", "MaPLe", "DualMIPrompt")
INCOMPLETE_MARK = "*"


class TablesError(ValueError):
    """Records that cannot make a table as asked; the message says what to change."""


# ----------------------------------------------------------------------------------------------- records
def dataset_keys():
    """``{DATASET.NAME: yaml key}`` from configs/datasets, so user-added datasets get run commands too."""
    keys = {name: key for name, key, _ in DATASET_CATALOGUE}
    folder = os.path.join(REPO, "configs", "datasets")
    if os.path.isdir(folder):
        for entry in sorted(os.listdir(folder)):
            if entry.endswith(".yaml"):
                with open(os.path.join(folder, entry)) as handle:
                    match = re.search(r"^\s*NAME:\s*[\"']?([\w.-]+)", handle.read(), re.M)
                if match:
                    keys.setdefault(match.group(1), entry[: -len(".yaml")])
    return keys


def dataset_name(text, keys):
    """A dataset given on the command line, as a yaml key (dtd) or a registered name (DescribableTextures)."""
    by_key = {key: name for name, key in keys.items()}
    if text in by_key:
        return by_key[text]
    if text in keys:
        return text
    raise TablesError(f"Unknown dataset {text!r}: give a key of configs/datasets ({', '.join(sorted(by_key))}).")


def label_of(dataset):
    return LABEL.get(dataset, dataset)


def protocol_of(record):
    """The protocol a record belongs to; records made by hand before the field existed count by their classes."""
    if record.get("protocol"):
        return record["protocol"]
    return "base2new" if record.get("subsample") in ("base", "new") else ""


def find_records(roots):
    """Every ``results.json`` under ``roots``: ``(records, problems)``; each record gets ``_path``."""
    records, problems = [], []
    paths = []
    for root in roots:
        if os.path.isfile(root):
            paths.append(root)
            continue
        if not os.path.isdir(root):
            raise TablesError(f"{root} does not exist: give the output folder of the protocol scripts (e.g. output/).")
        for folder, subfolders, files in os.walk(root):
            subfolders.sort()
            if RECORD_NAME in files:
                paths.append(os.path.join(folder, RECORD_NAME))
    for path in paths:
        try:
            with open(path) as handle:
                record = json.load(handle)
        except (OSError, json.JSONDecodeError) as err:
            problems.append(f"{path}: unreadable ({err})")
            continue
        if not isinstance(record, dict):
            problems.append(f"{path}: not a results record")
            continue
        lacking = [name for name in REQUIRED_FIELDS if name not in record]
        if lacking:
            problems.append(f"{path}: lacks {', '.join(lacking)}")
            continue
        if record.get("split", "test") != "test":
            problems.append(f"{path}: evaluated on the {record['split']} split, not the test split (not used)")
            continue
        record["_path"] = path
        records.append(record)
    return records, problems


# ----------------------------------------------------------------------------------------------- methods
@dataclass(frozen=True)
class MethodSpec:
    label: str
    trainer: str
    configs: tuple = ()

    @classmethod
    def parse(cls, text):
        """``LABEL=TRAINER[:CONFIG[,CONFIG...]]`` or ``TRAINER[:CONFIG...]``."""
        label, _, rest = text.rpartition("=")
        trainer, _, configs = rest.partition(":")
        if not trainer:
            raise TablesError(
                f"--method {text!r}: expected LABEL=TRAINER[:CONFIG[,CONFIG]], e.g. CoOp-50=CoOp:vit_b16_ep50")
        return cls(label or text, trainer, tuple(c for c in configs.split(",") if c))

    def matches(self, record):
        return record["trainer"] == self.trainer and (not self.configs or record.get("config") in self.configs)


def assign_methods(records, specs):
    """Each record's method label (records no --method matches are left out) and the methods in display order."""
    if not specs:
        for record in records:
            record["_method"] = record["trainer"]
        names = {record["_method"] for record in records}
        rank = {name: i for i, name in enumerate(TRAINER_ORDER)}
        return records, sorted(names, key=lambda name: (rank.get(name, len(rank)), name))
    chosen = []
    for record in records:
        spec = next((spec for spec in specs if spec.matches(record)), None)
        if spec is not None:
            record["_method"] = spec.label
            chosen.append(record)
    used = {record["_method"] for record in chosen}
    return chosen, list(dict.fromkeys(spec.label for spec in specs if spec.label in used))


# ----------------------------------------------------------------------------------------------- statistics
@dataclass
class Stat:
    """A mean over seeds (or a published number): ``seeds`` are the seeds it is computed from."""

    mean: float = None
    std: float = None
    seeds: tuple = ()
    complete: bool = True
    published: bool = False


def harmonic_mean(a, b):
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def paired_difference(a, b, confidence=0.95):
    """The paired difference ``a[i] - b[i]`` of two methods measured on the same cells (e.g. seed x dataset):
    ``{"mean", "low", "high", "n"}``, with the two-sided Student t interval of the mean difference at
    ``confidence`` (``low`` and ``high`` are None below two cells)."""
    if len(a) != len(b):
        raise ValueError(f"paired values need the same cells; got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    if not diffs:
        raise ValueError("no paired cells")
    mean = statistics.fmean(diffs)
    if len(diffs) < 2:
        return {"mean": mean, "low": None, "high": None, "n": 1}
    from scipy.stats import t

    half = float(t.ppf(0.5 + confidence / 2, len(diffs) - 1)) * statistics.stdev(diffs) / math.sqrt(len(diffs))
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": len(diffs)}


def summarise(by_seed, expected):
    seeds = tuple(sorted(by_seed))
    values = [by_seed[seed] for seed in seeds]
    if not values:
        return Stat(seeds=(), complete=False)
    return Stat(statistics.fmean(values), statistics.pstdev(values), seeds, set(expected) <= set(seeds))


def average_over(per_part, stats, expected):
    """The mean of several parts' means (datasets), with its spread over the seeds for which every part has a run:
    ``(Stat, {seed: average of that seed})``. ``per_part``: part -> seed -> value; ``stats``: part -> Stat. A part
    with no run at all leaves the mean over the parts present, marked incomplete, and no spread."""
    parts = list(per_part)
    present = [stats[part].mean for part in parts if stats[part].mean is not None]
    if len(present) < len(parts) or not parts:
        return Stat(statistics.fmean(present) if present else None, None, (), False), {}
    full_seeds = [seed for seed in expected if all(seed in per_part[part] for part in parts)]
    per_seed = {seed: statistics.fmean(per_part[part][seed] for part in parts) for seed in full_seeds}
    spread = statistics.pstdev(per_seed.values()) if per_seed else None
    complete = all(stats[part].complete for part in parts)
    return Stat(statistics.fmean(present), spread, tuple(full_seeds), complete), per_seed


def harmonic_stat(base, new, base_by_seed, new_by_seed):
    """HM of the mean Base and the mean New (as the papers), with the spread of the per-seed HMs."""
    both = [seed for seed in base_by_seed if seed in new_by_seed]
    values = [harmonic_mean(base_by_seed[seed], new_by_seed[seed]) for seed in both]
    mean = None if base.mean is None or new.mean is None else harmonic_mean(base.mean, new.mean)
    return Stat(mean, statistics.pstdev(values) if values else None, tuple(both), base.complete and new.complete)


# ----------------------------------------------------------------------------------------------- tables
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
        keys = [self.keys.get(d) for d in datasets]
        if None in keys or method not in self.trainer:
            return ""
        parts = list(env)
        if self.name != "fewshot" and self.shots != 16:
            parts.append(f"SHOTS={self.shots}")
        parts += [f"SEEDS={quote(' '.join(map(str, seeds)))}", f"DATASETS={quote(' '.join(keys))}"]
        parts += ["bash", f"scripts/{script}", self.trainer[method]]
        config = self.config_hint(method)
        return " ".join(parts + ([config] if config else []))


def quote(text):
    return f'"{text}"' if " " in text else text


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
    papers = list(published.BASE2NEW) if opts.published else []
    order = interleave(methods, protocol.trainer, papers)
    table = Table("base2new", f"Base-to-new generalisation ({shots_text(protocol)}), accuracy (%)",
                  ["Dataset", "Method", "Base", "New", "HM"])
    source = published.SOURCES["base2new"]
    per = {}  # method -> part -> dataset -> seed -> value
    stats = {}
    for dataset in datasets:
        for kind, method in order:
            if kind == "published":
                values = published.BASE2NEW[method].get(dataset)
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
        for metric, stat in zip(("base", "new", "hm"), cells):
            table.tidy.append(tidy_row("base2new", "Average", label, stat, metric, protocol.shots,
                                       source if stat.published else ""))
    table.notes.append("HM: harmonic mean of the mean Base and the mean New; on the average rows, of the averaged Base "
                       "and New. Spreads of averages are over the seeds that have every dataset.")
    if papers:
        table.notes.append(f"(published): {source}.")
        if set(datasets) != set(BENCHMARK):
            table.notes.append("[averaged here]: the published per-dataset numbers, averaged over this table's "
                               "datasets.")
    return table


def average_label(datasets):
    return f"Average ({len(datasets)} dataset{'s' if len(datasets) != 1 else ''})"


def published_average(paper, datasets):
    if set(datasets) == set(BENCHMARK):
        return [Stat(v, None, (), True, True) for v in published.BASE2NEW_AVERAGE[paper]]
    values = [published.BASE2NEW[paper].get(d) for d in datasets]
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


# ----------------------------------------------------------------------------------------------- output
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
            ax.bar(xs, ys, width, yerr=errs, label=method, capsize=2)
        ax.set_ylabel(f"{metric} accuracy (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(ncol=min(len(methods), 4), fontsize="small")
    axes[-1].set_xticks(range(len(groups)))
    axes[-1].set_xticklabels([g.replace(" (", "\n(") for g in groups], rotation=45, ha="right")
    axes[0].set_title(table.title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
                ax.errorbar(points, [stats[k].mean for k in points], marker="o", label=row[1],
                            yerr=[stats[k].std if len(stats[k].seeds) > 1 else 0.0 for k in points])
            elif 0 in stats and positive:
                ax.plot([min(positive), max(positive)], [stats[0].mean] * 2, "--", label=row[1])
        ax.set_title(group)
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
    fig.savefig(path, dpi=120)
    plt.close(fig)


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


# ----------------------------------------------------------------------------------------------- command line
def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("roots", nargs="+", help="output folders (searched for results.json) or record files")
    parser.add_argument("--protocol", choices=(*PROTOCOLS, "all"), default="all")
    parser.add_argument("--out", default="", help="folder for .md/.tex/.csv/.png (default: <first root>/tables)")
    parser.add_argument("--seeds", type=int, nargs="+", help="expected seeds (default: every seed found)")
    parser.add_argument("--datasets", nargs="+",
                        help="expected datasets, as configs/datasets keys (default: every one found)")
    parser.add_argument("--method", action="append", default=[], metavar="LABEL=TRAINER[:CONFIG,...]",
                        help="a method of the tables (repeatable; default: one per trainer)")
    parser.add_argument("--shots", type=int, help="base2new/xd/dg: the shot count to show when several were run")
    parser.add_argument("--shots-list", type=int, nargs="+", help="fewshot: expected shot counts (default: found)")
    parser.add_argument("--no-published", action="store_true", help="leave out the published rows")
    parser.add_argument("--digits", type=int, default=2)
    parser.add_argument("--no-figures", action="store_true")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when runs are missing")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        keys = dataset_keys()
        options = Options(
            seeds=tuple(args.seeds) if args.seeds else None,
            datasets=tuple(dataset_name(d, keys) for d in args.datasets) if args.datasets else None,
            methods=tuple(MethodSpec.parse(m) for m in args.method),
            shots=args.shots, shots_list=tuple(args.shots_list) if args.shots_list else None,
            published=not args.no_published, digits=args.digits,
        )
        records, problems = find_records(args.roots)
    except TablesError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    if not records:
        print(f"error: no {RECORD_NAME} under {' '.join(args.roots)}: run the protocol scripts first "
              "(e.g. bash scripts/base2new.sh CoOp).", file=sys.stderr)
        return 2
    protocols = PROTOCOLS if args.protocol == "all" else (args.protocol,)
    tables, errors = build_tables(records, protocols, options, keys)
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if not tables:
        if not errors:
            print(f"error: no records of protocol {args.protocol} among the {len(records)} found.", file=sys.stderr)
        return 2
    for table in tables:
        print(to_text(table, options.digits))
    out_dir = args.out or os.path.join(args.roots[0] if os.path.isdir(args.roots[0]) else ".", "tables")
    written = write_outputs(tables, out_dir, options.digits, figures=not args.no_figures)
    print(f"Written: {', '.join(written)}")
    if errors:
        return 2
    if args.strict and any(table.missing for table in tables):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
