"""Finding and reading the results records (``results.json``) and grouping them into methods."""
import json
import math
import os
import re
import stat
from dataclasses import dataclass

from .. import registry

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RECORD_NAME = "results.json"  # written by trainers/records.py (superseded ones are results-<date>.json)
PROTOCOLS = ("base2new", "xd", "dg", "fewshot")
REQUIRED_FIELDS = ("dataset", "trainer", "seed", "subsample", "shots", "accuracy")
MAX_RECORD_BYTES = 1 << 20  # a record is a few kilobytes; a larger file is not one (and is not read into memory)
INTEGER_BOUND = 2 ** 63  # seeds and shot counts: |value| below it

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
    """Every ``results.json`` under ``roots``: ``(records, problems)``; each record gets ``_path``. A file that is
    not a record (unreadable, not regular, too large, not a JSON object, lacking a field or holding a value no record
    holds) is left out with a problem that names it."""
    records, problems = [], []
    paths = []
    for root in roots:
        if not os.path.isdir(root):
            if not os.path.lexists(root):
                raise TablesError(f"{root} does not exist: give the output folder of the protocol scripts "
                                  "(e.g. output/).")
            paths.append(root)  # a record named on the command line (read_record refuses what is not a file)
            continue
        for folder, subfolders, files in os.walk(root):
            subfolders.sort()
            if RECORD_NAME in files:
                paths.append(os.path.join(folder, RECORD_NAME))
    for path in paths:
        record, problem = read_record(path)
        if problem is None:
            lacking = [name for name in REQUIRED_FIELDS if name not in record]
            problem = f"lacks {', '.join(lacking)}" if lacking else record_problem(record)
        if problem is not None:
            problems.append(f"{path}: {problem}")
            continue
        split = record.get("split", "test")
        if split != "test":
            if not (isinstance(split, str) and split.isprintable() and len(split) <= 40):
                split = shown(split)
            problems.append(f"{path}: evaluated on the {split} split, not the test split (not used)")
            continue
        record["_path"] = path
        records.append(record)
    return records, problems


def read_record(path):
    """``(the JSON object in the file, None)`` or ``(None, what is wrong)``. Only a regular file is read (a FIFO
    would wait for a writer, a device never end), and at most MAX_RECORD_BYTES of it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO opens at once, then is refused
    except OSError as err:
        return None, f"unreadable ({err})"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, "not a regular file (not read)"
        with os.fdopen(fd, "rb") as handle:
            fd = None
            data = handle.read(MAX_RECORD_BYTES + 1)
    except OSError as err:
        return None, f"unreadable ({err})"
    finally:
        if fd is not None:
            os.close(fd)
    if len(data) > MAX_RECORD_BYTES:
        return None, f"larger than {MAX_RECORD_BYTES} bytes, not a results record (not read)"
    try:
        record = json.loads(data, parse_int=parse_int)
    except (ValueError, RecursionError) as err:  # not JSON, not in a JSON encoding, nested past the stack
        text = str(err)
        return None, f"unreadable ({text if len(text) <= 160 else text[:157] + '...'})"
    if not isinstance(record, dict):
        return None, "not a results record"
    return record, None


class LongInteger:
    """A JSON integer of more digits than any field of a record can hold, kept as its text: Python refuses to
    convert one of 4300 digits or more, and no check can take it for a number."""

    def __init__(self, text):
        self.text = text

    def __repr__(self):
        return self.text


def parse_int(text):
    return int(text) if len(text) <= 100 else LongInteger(text)


def shown(value, width=40):
    """A value as a warning shows it: its repr, cut to ``width`` characters."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def is_integer(value):
    return isinstance(value, int) and not isinstance(value, bool) and -INTEGER_BOUND < value < INTEGER_BOUND


def record_problem(record):
    """What makes a record's values unusable, or None: accuracy a finite number in [0, 100], seed and shots
    integers (|value| < 2**63), dataset and trainer non-empty strings, subsample a string, config and protocol
    strings when given."""
    accuracy = record["accuracy"]
    if not (isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool)
            and 0 <= accuracy <= 100 and math.isfinite(accuracy)):  # (a large int compares; as a float it overflows)
        return f"accuracy {shown(accuracy)} is not a number in [0, 100] (not used)"
    for name in ("seed", "shots"):
        if not is_integer(record[name]):
            return f"{name} {shown(record[name])} is not an integer (not used)"
    for name in ("dataset", "trainer"):
        if not isinstance(record[name], str) or not record[name]:
            return f"{name} {shown(record[name])} is not a name (not used)"
    if not isinstance(record["subsample"], str):
        return f"subsample {shown(record['subsample'])} is not a string (not used)"
    for name in ("config", "protocol"):
        if record.get(name) is not None and not isinstance(record[name], str):
            return f"{name} {shown(record[name])} is not a string (not used)"
    return None


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
        # the registry's order (then undeclared trainers alphabetically), unless --method gives an order
        return records, sorted(names, key=registry.order_key)
    chosen = []
    for record in records:
        spec = next((spec for spec in specs if spec.matches(record)), None)
        if spec is not None:
            record["_method"] = spec.label
            chosen.append(record)
    used = {record["_method"] for record in chosen}
    return chosen, list(dict.fromkeys(spec.label for spec in specs if spec.label in used))
