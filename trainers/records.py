"""Results records: one JSON file per final evaluation, the data the benchmark tables are built from."""
import datetime
import json
import os

from .fileio import atomic_write_json

RECORD_NAME = "results.json"

RECORD_FIELDS = (
    "dataset", "trainer", "config", "backbone", "seed", "subsample", "shots", "split", "epoch",
    "num_classes", "num_images", "accuracy", "macro_f1", "error_rate", "train_time_s", "eval_time_s",
    "eval_only", "model_dir", "output_dir", "created", "config_sha256", "versions",
)

# Fields that differ between two runs of the same command (when and where it ran, how long it took).
VOLATILE_FIELDS = ("train_time_s", "eval_time_s", "created", "output_dir", "model_dir")


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


def write_record(output_dir, record):
    """Write ``results.json``; an earlier record of the same folder is kept under a dated name, never lost."""
    missing = [field for field in RECORD_FIELDS if field not in record]
    if missing:
        raise ValueError(f"results record lacks {', '.join(missing)}")
    path = os.path.join(output_dir, RECORD_NAME)
    if os.path.exists(path):
        with open(path) as handle:
            try:
                previous = json.load(handle).get("created", "")
            except (json.JSONDecodeError, AttributeError):
                previous = ""
        stamp = previous.replace(":", "").replace("-", "") or datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
        os.replace(path, os.path.join(output_dir, f"results-{stamp}.json"))
    atomic_write_json(path, record)
    return path


def read_record(path):
    with open(path) as handle:
        return json.load(handle)


def now():
    return datetime.datetime.now().isoformat(timespec="seconds")
