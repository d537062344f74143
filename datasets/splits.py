"""Split files, few-shot sampling and base/new class subsampling: the rules every dataset shares.

The rules reproduce CoOp's so that published numbers stay comparable:
- few-shot: ``random.seed(seed)``, then for each label in order of first appearance in the list,
  ``random.sample(items_of_that_label, k)`` (all items when a label has fewer than ``k``); the validation set is
  sampled afterwards from the same stream with ``min(k, 4)`` shots;
- base/new: the labels present in the training list, sorted; the first ``ceil(n / 2)`` are base, the rest new,
  each relabelled from 0 in order.
Validation folds (``validation_task``) split the base classes again, for choosing hyperparameters without a test
image or a new class.
"""
import hashlib
import json
import math
import os
import random
from collections import namedtuple

import numpy as np

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


# The fixed seed of the pseudo-base / pseudo-new partition of the base classes: the folds are the same for every
# run, trainer and seed, so a hyperparameter is always compared on the same tasks.
VALIDATION_SEED = 20231


def validation_folds(base_labels, folds):
    """The base labels cut into ``folds`` groups after a fixed shuffle; fold ``k`` holds out group ``k - 1``
    as its pseudo-new classes."""
    if folds < 2:
        raise ValueError(f"DATASET.VAL_FOLDS must be at least 2; got {folds}")
    if len(base_labels) < 2 * folds:
        raise ValueError(f"{len(base_labels)} base classes are too few for {folds} validation folds "
                         "(each fold needs at least two pseudo-base and two pseudo-new classes)")
    order = [base_labels[i] for i in np.random.default_rng(VALIDATION_SEED).permutation(len(base_labels))]
    return [sorted(order[k::folds]) for k in range(folds)]


def validation_task(train, val, fewshot_train, subsample, fold, folds=2):
    """The validation version of a base-to-new run: ``(train, val, test)`` that never hold a new class or a test
    image.

    The base classes (first half of the labels, as ``subsample_classes``) are split into pseudo-base and pseudo-new
    classes (``validation_folds``; fold ``fold`` of ``folds``); ``subsample`` ``base`` keeps the pseudo-base ones,
    ``new`` the pseudo-new ones, relabelled from 0. Training uses the run's few-shot images of those classes; the
    evaluation uses held-out images of them: the training images that are not among the few shots, and the
    validation split."""
    if subsample not in ("base", "new"):
        raise ValueError("DATASET.VAL_FOLD needs DATASET.SUBSAMPLE_CLASSES base or new (the base-to-new protocol); "
                         f"got {subsample!r}")
    if not 1 <= fold <= folds:
        raise ValueError(f"DATASET.VAL_FOLD must be 0 (off) or a fold from 1 to DATASET.VAL_FOLDS={folds}; got {fold}")
    labels = sorted({item.label for item in train})
    base = labels[:math.ceil(len(labels) / 2)]
    pseudo_new = validation_folds(base, folds)[fold - 1]
    selected = pseudo_new if subsample == "new" else [label for label in base if label not in pseudo_new]
    relabel = {old: new for new, old in enumerate(selected)}
    shots = {os.path.normpath(item.impath) for item in fewshot_train}
    if not shots <= {os.path.normpath(item.impath) for item in train}:
        raise ValueError("the few-shot images are not all in the training split; delete the dataset's split_fewshot "
                         "cache so that it is sampled again")
    held_out = [item for item in train if os.path.normpath(item.impath) not in shots] + list(val or [])

    def keep(items):
        return [item._replace(label=relabel[item.label]) for item in items if item.label in relabel]

    test = keep(held_out)
    if not test:
        raise ValueError("No held-out images for validation: the training split has no image beyond the few shots "
                         "and there is no validation split.")
    return keep(fewshot_train), None, test


def _to_relative(items, root):
    return [[os.path.relpath(item.impath, root), item.label, item.classname] for item in items]


def load_or_build_fewshot(cache_path, key, dataset_dir, build):
    """Few-shot lists from the JSON cache at ``cache_path`` when its ``key`` matches, else ``build()`` and cache.

    Paths are stored relative to ``dataset_dir`` so the cache survives moving the data folder. A cache whose key
    differs (other split file, rule or shots) or that cannot be parsed is rebuilt with a message.
    """
    from common.fileio import atomic_write_json

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
