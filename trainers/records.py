"""Results records: one JSON file per final evaluation, the data the benchmark tables are built from."""
import datetime
import json
import os

from common.fileio import atomic_open, atomic_write_json

from .config import config_fingerprint

RECORD_NAME = "results.json"
SUMMARY_NAME = "summary.txt"

RECORD_FIELDS = (
    "dataset", "trainer", "config", "protocol", "backbone", "seed", "subsample", "shots", "split", "epoch",
    "num_classes", "num_images", "accuracy", "macro_f1", "error_rate", "train_time_s", "eval_time_s",
    "eval_only", "model_dir", "output_dir", "created", "config_sha256", "versions",
)

# Fields that differ between two runs of the same command (when and where it ran, how long it took).
VOLATILE_FIELDS = ("train_time_s", "eval_time_s", "created", "output_dir", "model_dir")


def build_record(cfg, split, results, num_classes, num_images, eval_time, train_time=None, epoch=None,
                 model_dir="", training_history=()):
    """The record of one final evaluation, with every field of ``RECORD_FIELDS`` (and ``training`` when the run
    trained). ``train_time`` is None for an evaluation-only run; ``epoch`` is that of the weights evaluated."""
    record = {
        "dataset": cfg.DATASET.NAME,
        "trainer": cfg.TRAINER.NAME,
        "config": cfg.CONFIG_NAME,
        "protocol": cfg.PROTOCOL,
        "backbone": cfg.MODEL.BACKBONE.NAME,
        "seed": cfg.SEED,
        "subsample": cfg.DATASET.SUBSAMPLE_CLASSES,
        "shots": cfg.DATASET.NUM_SHOTS,
        # held-out training images of a validation fold are never taken for a test result
        "split": f"val_fold{cfg.DATASET.VAL_FOLD}" if cfg.DATASET.VAL_FOLD else split,
        "epoch": epoch,
        "num_classes": num_classes,
        "num_images": num_images,
        "accuracy": results["accuracy"],
        "macro_f1": results["macro_f1"],
        "error_rate": results["error_rate"],
        "train_time_s": None if train_time is None else round(train_time, 3),
        "eval_time_s": round(eval_time, 3),
        "eval_only": train_time is None,
        "model_dir": model_dir,
        "output_dir": os.path.abspath(cfg.OUTPUT_DIR),
        "created": now(),
        "config_sha256": config_fingerprint(cfg),
        "versions": library_versions(),
    }
    assert tuple(record) == RECORD_FIELDS
    if training_history:  # what training logged, first and last epoch of this process (per-epoch: tensorboard)
        record["training"] = {"first_epoch": training_history[0], "last_epoch": training_history[-1]}
    return record


def library_versions():
    import platform

    import numpy
    import torch
    import torchvision

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "torchvision": torchvision.__version__, "numpy": numpy.__version__}
    for name in ("dassl", "clip"):
        try:
            versions[name] = __import__(name).__version__
        except (ImportError, AttributeError):
            versions[name] = None
    if versions["clip"] is None:
        from importlib import metadata

        for dist in ("clip-anytorch", "openai-clip"):
            try:
                versions["clip"] = f"{dist} {metadata.version(dist)}"
                break
            except metadata.PackageNotFoundError:
                pass
    return versions


def superseded_path(output_dir, path):
    """Where an earlier record goes: ``results-<its creation time>.json``, never over another file. Its ``created``
    is only trusted as letters and digits (a damaged or crafted record can name no other place, nor crash the
    run that would lose its new record for it)."""
    try:
        with open(path) as handle:
            created = json.load(handle).get("created")
    except (OSError, ValueError, AttributeError):
        created = None
    stamp = "".join(c for c in created if c.isascii() and c.isalnum()) if isinstance(created, str) else ""
    stamp = stamp[:32] or datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    candidate, n = os.path.join(output_dir, f"results-{stamp}.json"), 1
    while os.path.exists(candidate):
        candidate, n = os.path.join(output_dir, f"results-{stamp}-{n}.json"), n + 1
    return candidate


def write_record(output_dir, record):
    """Write ``results.json`` and its readable twin ``summary.txt``; an earlier record of the same folder is kept
    under a dated name, never lost."""
    missing = [field for field in RECORD_FIELDS if field not in record]
    if missing:
        raise ValueError(f"results record lacks {', '.join(missing)}")
    path = os.path.join(output_dir, RECORD_NAME)
    if os.path.exists(path):
        os.replace(path, superseded_path(output_dir, path))
    atomic_write_json(path, record)
    with atomic_open(os.path.join(output_dir, SUMMARY_NAME)) as handle:
        handle.write(format_summary(record))
    return path


CLASS_SUBSETS = {"all": "all of the dataset's classes", "base": "the base half of the classes",
                 "new": "the new half of the classes"}


def _seconds(value):
    return "-" if value is None else f"{value:.1f} s"


def format_summary(record):
    """The record as a few lines a person reads: what ran, on which classes, with what result and in how long."""
    if not record["eval_only"]:
        model = f"trained in this run for {record['epoch']} epochs"
    elif record["model_dir"]:
        model = f"loaded from {record['model_dir']} (epoch {record['epoch']})"
    else:
        model = "as built, nothing loaded (zero-shot)"
    shots = record["shots"]
    subset = CLASS_SUBSETS.get(record["subsample"], record["subsample"])
    lines = [
        ("protocol", record["protocol"] or "(none: run by hand)"),
        ("dataset", f"{record['dataset']}, {record['split']} split"),
        ("classes", f"{record['num_classes']} ({subset})"),
        ("images", str(record["num_images"])),
        ("trainer", record["trainer"]),
        ("config", f"{record['config'] or '(none)'} (backbone {record['backbone']})"),
        ("seed", str(record["seed"])),
        ("shots", f"{shots} per class" if shots >= 1 else "all training images"),
        ("model", model),
        ("accuracy", f"{record['accuracy']:.2f}%  (macro-F1 {record['macro_f1']:.2f}%, "
                     f"error {record['error_rate']:.2f}%)"),
        ("time", f"training {_seconds(record['train_time_s'])}, evaluation {_seconds(record['eval_time_s'])}"),
        ("created", record["created"]),
    ]
    width = max(len(key) for key, _ in lines)
    body = "".join(f"{key:<{width}}  {value}\n" for key, value in lines)
    return f"Results of one evaluation ({RECORD_NAME} beside this file holds the same as data)\n{body}"


def read_record(path):
    with open(path) as handle:
        return json.load(handle)


def now():
    return datetime.datetime.now().isoformat(timespec="seconds")
