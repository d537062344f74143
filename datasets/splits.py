"""Split files, few-shot sampling and base/new class subsampling: the rules every dataset shares.

The rules reproduce CoOp's so that published numbers stay comparable:
- few-shot: ``random.seed(seed)``, then for each label in order of first appearance in the list,
  ``random.sample(items_of_that_label, k)`` (all items when a label has fewer than ``k``); the validation set is
  sampled afterwards from the same stream with ``min(k, 4)`` shots;
- base/new: the labels present in the training list, sorted; the first ``ceil(n / 2)`` are base, the rest new,
  each relabelled from 0 in order.
"""
import hashlib
import json
import math
import os
import random
from collections import namedtuple

Item = namedtuple("Item", "impath label classname")

SPLIT_NAMES = ("train", "val", "test")
FEWSHOT_RULE = "coop-v1"  # bump when the sampling rule changes, so old caches are rebuilt


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder, split file or image is missing or malformed; the message says how to fix it."""


def safe_join(root, relative, source):
    """``root/relative``, refusing paths that would leave ``root`` (absolute paths or ``..``)."""
    if not isinstance(relative, str) or not relative:
        raise DatasetLayoutError(f"{source}: expected a relative image path, got {relative!r}")
    if os.path.isabs(relative) or ".." in relative.replace("\\", "/").split("/"):
        raise DatasetLayoutError(f"{source}: path {relative!r} leaves the dataset folder; only relative paths "
                                 "inside it are accepted")
    return os.path.join(root, relative)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_entries(entries, root, source):
    items = []
    for entry in entries:
        if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
            raise DatasetLayoutError(f"{source}: each entry must be [image path, label, class name]; got {entry!r}")
        relative, label, classname = entry
        if isinstance(label, bool) or not isinstance(label, int) or label < 0 or not isinstance(classname, str):
            raise DatasetLayoutError(f"{source}: bad label or class name in entry {entry!r}")
        items.append(Item(safe_join(root, relative, source), label, classname))
    return items


def read_split_file(path, image_root):
    """``{"train": [...], "val": [...], "test": [...]}`` of ``Item`` from a CoOp ``split_zhou_*.json`` file whose
    paths are relative to ``image_root``."""
    try:
        with open(path) as handle:
            split = json.load(handle)
    except json.JSONDecodeError as err:
        raise DatasetLayoutError(f"Split file {path} is not valid JSON ({err}); download it again.") from None
    if not isinstance(split, dict) or any(name not in split for name in SPLIT_NAMES):
        raise DatasetLayoutError(f"Split file {path} must be a JSON object with train, val and test lists.")
    return {name: _parse_entries(split[name], image_root, f"{path} [{name}]") for name in SPLIT_NAMES}


def check_images_exist(items, dataset_dir, source):
    missing = [item.impath for item in items if not os.path.isfile(item.impath)]
    if missing:
        raise DatasetLayoutError(
            f"{len(missing)} of the {len(items)} images listed by {source} are missing, e.g. {missing[0]}. "
            f"Check that the images are extracted in {dataset_dir} with the folder names README gives."
        )


def sample_fewshot(items, num_shots, rng):
    """CoOp's rule (Dassl's ``generate_fewshot_dataset``) with an explicit random generator."""
    by_label = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    selected = []
    for group in by_label.values():
        selected.extend(rng.sample(group, num_shots) if len(group) >= num_shots else group)
    return selected


def fewshot_splits(train, val, num_shots, seed, val_shots_cap=4):
    """The few-shot train and validation lists for ``seed`` (``val`` may be None)."""
    rng = random.Random(seed) if seed >= 0 else random.Random()
    train = sample_fewshot(train, num_shots, rng)
    if val is not None:
        val = sample_fewshot(val, min(num_shots, val_shots_cap), rng)
    return train, val


def subsample_classes(*splits, subsample="all"):
    """Keep the base (first half) or new (second half) classes of the training list, relabelled from 0."""
    if subsample not in ("all", "base", "new"):
        raise ValueError(f"DATASET.SUBSAMPLE_CLASSES must be all, base or new; got {subsample!r}")
    if subsample == "all":
        return splits
    labels = sorted({item.label for item in splits[0]})
    half = math.ceil(len(labels) / 2)
    selected = labels[:half] if subsample == "base" else labels[half:]
    relabel = {old: new for new, old in enumerate(selected)}
    return tuple(
        None if split is None else [item._replace(label=relabel[item.label]) for item in split if item.label in relabel]
        for split in splits
    )


def _to_relative(items, root):
    return [[os.path.relpath(item.impath, root), item.label, item.classname] for item in items]


def load_or_build_fewshot(cache_path, key, dataset_dir, build):
    """Few-shot lists from the JSON cache at ``cache_path`` when its ``key`` matches, else ``build()`` and cache.

    Paths are stored relative to ``dataset_dir`` so the cache survives moving the data folder. A cache whose key
    differs (other split file, rule or shots) or that cannot be parsed is rebuilt with a message.
    """
    from trainers.fileio import atomic_write_json

    if os.path.isfile(cache_path):
        try:
            with open(cache_path) as handle:
                cached = json.load(handle)
            if cached.get("key") == key:
                print(f"Loading few-shot data from {cache_path}")
                return tuple(
                    None if cached[name] is None else _parse_entries(cached[name], dataset_dir, cache_path)
                    for name in ("train", "val")
                )
            print(f"Few-shot cache {cache_path} was made for other settings; rebuilding it")
        except (json.JSONDecodeError, KeyError, AttributeError, DatasetLayoutError) as err:
            print(f"Few-shot cache {cache_path} is unreadable ({err}); rebuilding it")
    train, val = build()
    payload = {
        "key": key,
        "train": _to_relative(train, dataset_dir),
        "val": None if val is None else _to_relative(val, dataset_dir),
    }
    atomic_write_json(cache_path, payload)
    print(f"Saved few-shot data to {cache_path}")
    return train, val
