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
import reprlib
import warnings
from collections import namedtuple

import numpy as np

from .limits import SPLIT_SIZE_ENV, human, max_split_size

Item = namedtuple("Item", "impath label classname")

SPLIT_NAMES = ("train", "val", "test")
FEWSHOT_RULE = "coop-v1"  # bump when the sampling rule changes, so old caches are rebuilt


class DatasetLayoutError(FileNotFoundError):
    """A dataset folder, split file or image is missing or malformed; the message says how to fix it."""


class SplitFileWarning(UserWarning):
    """A split file that can be used but looks wrong: duplicate entries, or evaluation labels never trained on."""


REFETCH = ("delete the file and run python -m datasets.prepare for this dataset to download CoOp's original again "
           "(see docs/datasets.md)")

_SHORT = reprlib.Repr()  # bounded depth and length: safe for any value a JSON file can hold
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxlong, _SHORT.maxother = 3, 4, 4, 80, 40, 80


def _short(value):
    return _SHORT.repr(value)


def _json_kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    for kind, name in ((str, "a string"), ((int, float), "a number"), (list, "a list"), (dict, "an object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def safe_join(root, relative, source, advice=""):
    """``root/relative``, refusing paths that would leave ``root`` (absolute paths or ``..``); ``advice`` ends the
    message."""
    advice = f". {advice}" if advice else ""
    if not isinstance(relative, str) or not relative or "\0" in relative:
        raise DatasetLayoutError(f"{source}: expected a relative image path, got {_short(relative)}{advice}")
    if os.path.isabs(relative) or ".." in relative.replace("\\", "/").split("/"):
        raise DatasetLayoutError(f"{source}: path {relative!r} leaves the dataset folder; only relative paths "
                                 f"inside it are accepted{advice}")
    return os.path.join(root, relative)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_entry(entry, root, where):
    """One ``[image path, label, class name]`` entry as an ``Item``; ``where`` names the file, split and index."""
    if not (isinstance(entry, (list, tuple)) and len(entry) == 3):
        raise DatasetLayoutError(f"{where}: each entry must be [image path, label, class name]; got "
                                 f"{_short(entry)}. Fix or remove the entry, or {REFETCH}.")
    relative, label, classname = entry
    if isinstance(label, bool) or not isinstance(label, int) or label < 0:
        raise DatasetLayoutError(f"{where}: bad label {_short(label)} in {_short(entry)}: a label is a whole number "
                                 f"from 0 (the class index). Fix the entry, or {REFETCH}.")
    if not isinstance(classname, str) or not classname.strip():
        raise DatasetLayoutError(f"{where}: bad class name {_short(classname)} in {_short(entry)}: a class name is "
                                 f"a non-empty string. Fix the entry, or {REFETCH}.")
    return Item(safe_join(root, relative, where, f"Fix the entry, or {REFETCH}."), label, classname)


def _parse_entries(entries, root, source):
    if not isinstance(entries, list):
        raise DatasetLayoutError(f"{source}: expected a list of [image path, label, class name] entries, got "
                                 f"{_json_kind(entries)}")
    return [_parse_entry(entry, root, f"{source} entry {index}") for index, entry in enumerate(entries)]


def _load_json(path):
    try:
        cap = max_split_size()
    except ValueError as err:
        raise DatasetLayoutError(f"{err}.") from None
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise DatasetLayoutError(f"Cannot read split file {path}: {err.strerror}.") from None
    if size > cap:  # checked before reading: parsing JSON takes ~20 times the file's size in memory
        raise DatasetLayoutError(
            f"Split file {path} is {human(size)}, above the cap on split files of {human(cap)} (${SPLIT_SIZE_ENV}): "
            f"CoOp's split files are a few MB, so this one is damaged or not a split file; {REFETCH}. If it is "
            f"genuine, raise the cap (e.g. {SPLIT_SIZE_ENV}=1G).")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except RecursionError:
        raise DatasetLayoutError(f"Split file {path} nests lists or objects too deeply to be read: a split file is "
                                 "an object of lists of [image path, label, class name] entries, so this one is "
                                 f"corrupt or not a split file; {REFETCH}.") from None
    except MemoryError:
        raise DatasetLayoutError(f"Split file {path} is too large to be read into memory: it is corrupt or not a "
                                 f"split file; {REFETCH}.") from None
    except ValueError as err:  # json.JSONDecodeError, UnicodeDecodeError, an integer too long to convert
        raise DatasetLayoutError(f"Split file {path} is not valid JSON ({err}); {REFETCH}.") from None


def validate_split(split, image_root, path, test_only=False):
    """The checked ``{"train": [Item], "val": [Item], "test": [Item]}`` of a parsed split file: the one place
    where split files are validated, for training (``read_split_file``) and ``python -m datasets.prepare --check``
    alike.

    Refused, each with a ``DatasetLayoutError`` naming the file, the split and the entry: a split that is not a list,
    an entry that is not ``[relative image path, label, class name]`` (``int`` label, not ``bool``), an absolute path
    or one with ``..``, an empty train or test split, labels that are not exactly ``0..N-1`` (``N`` the number of
    distinct labels), a label with two class names. Warned about (``SplitFileWarning``): an image listed twice,
    in one split or in two, and validation / test labels that the training split never has. A ``test_only``
    dataset (a domain-generalisation target, only ever evaluated) may have an empty train split."""
    if not isinstance(split, dict) or any(name not in split for name in SPLIT_NAMES):
        raise DatasetLayoutError(f"Split file {path} must be a JSON object with train, val and test lists; "
                                 f"{REFETCH}.")
    items = {}
    for name in SPLIT_NAMES:
        entries = split[name]
        if not isinstance(entries, list):
            empty = " (write [] for no validation images)" if name == "val" else ""
            raise DatasetLayoutError(f"Split file {path}, {name} split: expected a list of [image path, label, class "
                                     f"name] entries{empty}, got {_json_kind(entries)}; {REFETCH}.")
        if not entries and (name == "test" or name == "train" and not test_only):
            raise DatasetLayoutError(f"Split file {path}, {name} split: it is empty, and a dataset needs at least one "
                                     f"{name} image; {REFETCH}.")
        items[name] = [_parse_entry(entry, image_root, f"Split file {path}, {name} entry {index}")
                       for index, entry in enumerate(entries)]

    first = {}  # label -> (class name, split, index) where it is first seen
    for name in SPLIT_NAMES:
        for index, item in enumerate(items[name]):
            seen = first.setdefault(item.label, (item.classname, name, index))
            if seen[0] != item.classname:
                raise DatasetLayoutError(
                    f"Split file {path}, {name} entry {index}: label {_short(item.label)} is named "
                    f"{_short(item.classname)} here but {_short(seen[0])} in {seen[1]} entry {seen[2]}; a label must "
                    f"have one class name. Correct the label or the class name of one of them, or {REFETCH}.")
    num_classes = len(first)
    missing = sorted(set(range(num_classes)) - set(first))
    if missing:
        name, index, item = next((name, index, item) for name in SPLIT_NAMES
                                 for index, item in enumerate(items[name]) if item.label >= num_classes)
        shown = ", ".join(map(str, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DatasetLayoutError(
            f"Split file {path}, {name} entry {index}: label {_short(item.label)} is out of range: the file has "
            f"{num_classes} distinct labels, so they must be 0..{num_classes - 1} with none missing, and "
            f"{'label' if len(missing) == 1 else 'labels'} {shown} {'is' if len(missing) == 1 else 'are'} missing. "
            f"Renumber the labels to 0..{num_classes - 1}, or {REFETCH}.")
    _warn_about_suspicious_entries(items, path, test_only)
    return items


def _warn_about_suspicious_entries(items, path, test_only=False):
    where = {}  # normalised image path -> [(split, index)]
    for name in SPLIT_NAMES:
        for index, item in enumerate(items[name]):
            where.setdefault(os.path.normpath(item.impath), []).append((name, index))
    for name in SPLIT_NAMES:
        repeated = [places for places in where.values() if sum(split == name for split, _ in places) > 1]
        if repeated:
            indices = [index for split, index in repeated[0] if split == name]
            warnings.warn(f"Split file {path}, {name} split: {len(repeated)} images are listed more than once (e.g. "
                          f"{name} entries {indices[0]} and {indices[1]}, {items[name][indices[0]].impath}); "
                          "each copy counts as a separate image.", SplitFileWarning, stacklevel=3)
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        shared = [places for places in where.values() if {a, b} <= {split for split, _ in places}]
        if shared:
            index_a = next(index for split, index in shared[0] if split == a)
            index_b = next(index for split, index in shared[0] if split == b)
            warnings.warn(f"Split file {path}: the {a} and {b} splits share {len(shared)} images (e.g. {a} entry "
                          f"{index_a} is {b} entry {index_b}, {items[a][index_a].impath}).", SplitFileWarning,
                          stacklevel=3)
    trained = {item.label for item in items["train"]}
    for name in () if test_only else ("val", "test"):
        untrained = [(index, item) for index, item in enumerate(items[name]) if item.label not in trained]
        if untrained:
            labels = sorted({item.label for _, item in untrained})
            index, item = untrained[0]
            warnings.warn(f"Split file {path}, {name} split: {len(labels)} of its labels never appear in the train "
                          f"split (e.g. label {_short(item.label)} {_short(item.classname)} at {name} entry {index}); those classes "
                          "are never trained on.", SplitFileWarning, stacklevel=3)


def read_split_file(path, image_root, test_only=False):
    """``{"train": [...], "val": [...], "test": [...]}`` of ``Item`` from a CoOp ``split_zhou_*.json`` file whose
    paths are relative to ``image_root``, validated by ``validate_split``."""
    return validate_split(_load_json(path), image_root, path, test_only)


def check_images_exist(items, dataset_dir, source):
    missing = [item.impath for item in items if not os.path.isfile(item.impath)]
    if missing:
        raise DatasetLayoutError(
            f"{len(missing)} of the {len(items)} images listed by {source} are missing, e.g. {missing[0]}. "
            f"Check that the images are extracted in {dataset_dir} with the folder names docs/datasets.md gives."
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
    from common.fileio import WriteError, atomic_write_json

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
        except (ValueError, RecursionError, KeyError, AttributeError, TypeError, DatasetLayoutError) as err:
            print(f"Few-shot cache {cache_path} is unreadable ({err}); rebuilding it")
    train, val = build()
    payload = {
        "key": key,
        "train": _to_relative(train, dataset_dir),
        "val": None if val is None else _to_relative(val, dataset_dir),
    }
    try:
        atomic_write_json(cache_path, payload)
    except WriteError as err:
        # A read-only data folder (a shared, prepared copy) still trains: the lists come from the seed alone, so
        # sampling them again in each run gives the same images; the cache only saves that time.
        print(f"Few-shot data not cached ({err}); using the lists sampled now, which the same seed gives again")
        return train, val
    print(f"Saved few-shot data to {cache_path}")
    return train, val
