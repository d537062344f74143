"""Split files, CoOp's few-shot rule, base/new subsampling and the JSON few-shot cache (no Dassl needed)."""
import json
import math
import os
import random
import shutil

import pytest

from datasets.splits import (
    DatasetLayoutError,
    Item,
    fewshot_splits,
    load_or_build_fewshot,
    read_split_file,
    subsample_classes,
    validation_folds,
    validation_task,
)


def items(n_classes, per_class, prefix="img", shuffle_seed=None):
    out = [Item(f"/d/{prefix}_{c}_{i}.jpg", c, f"class{c}") for c in range(n_classes) for i in range(per_class)]
    if shuffle_seed is not None:  # labels interleaved, so "order of first appearance" matters
        random.Random(shuffle_seed).shuffle(out)
    return out


def documented_rule(train, val, k, seed):
    """The rule as documented: seed Python's random, then per label in order of first appearance,
    random.sample(k) (all items when fewer); validation afterwards from the same stream with min(k, 4)."""
    random.seed(seed)

    def pick(data, shots):
        groups = {}
        for item in data:
            groups.setdefault(item.label, []).append(item)
        chosen = []
        for group in groups.values():
            chosen += random.sample(group, shots) if len(group) >= shots else group
        return chosen

    return pick(train, k), pick(val, min(k, 4))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("k", [1, 4, 16])
def test_fewshot_follows_the_documented_rule(seed, k):
    train, val = items(7, 20, shuffle_seed=5), items(7, 6, "val", shuffle_seed=6)
    ours = fewshot_splits(train, val, k, seed)
    assert ours == documented_rule(train, val, k, seed)
    assert len(ours[0]) == 7 * k and len(ours[1]) == 7 * min(k, 4)


def test_fewshot_is_deterministic_per_seed_and_differs_across_seeds():
    train = items(5, 30)
    first = fewshot_splits(train, None, 4, 1)
    assert first == fewshot_splits(train, None, 4, 1)
    assert first[1] is None
    assert first[0] != fewshot_splits(train, None, 4, 2)[0]


def test_fewshot_keeps_all_items_of_a_small_class():
    train = items(3, 10) + [Item("/d/rare.jpg", 3, "rare")]
    selected, _ = fewshot_splits(train, None, 4, 0)
    assert [item for item in selected if item.label == 3] == [Item("/d/rare.jpg", 3, "rare")]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_class_with_exactly_k_images_is_sampled_like_dassl_and_coop(seed):
    """The boundary of the rule: a class with exactly ``k`` images goes through ``random.sample`` (``>=``, as in
    Dassl and CoOp), which shuffles it and draws from the stream the next classes are sampled from."""
    k = 4
    exact = [Item(f"/d/exact_{i}.jpg", 0, "exact") for i in range(k)]
    train = exact + [item._replace(label=item.label + 1) for item in items(3, 10)]
    selected, _ = fewshot_splits(train, None, k, seed)
    random.seed(seed)
    expected_exact = random.sample(exact, k)
    assert selected[:k] == expected_exact and sorted(selected[:k]) == sorted(exact)
    assert selected == documented_rule(train, [], k, seed)[0]


@pytest.mark.parametrize("n_classes", [6, 7, 100, 101])
def test_base_and_new_halves(n_classes):
    train, test = items(n_classes, 2, shuffle_seed=1), items(n_classes, 1, "test")
    base_train, base_test = subsample_classes(train, test, subsample="base")
    new_train, new_test = subsample_classes(train, test, subsample="new")
    half = math.ceil(n_classes / 2)
    assert {i.classname for i in base_test} == {f"class{c}" for c in range(half)}
    assert {i.classname for i in new_test} == {f"class{c}" for c in range(half, n_classes)}
    # relabelled from 0 in the original order
    assert all(i.label == int(i.classname[5:]) for i in base_train + base_test)
    assert all(i.label == int(i.classname[5:]) - half for i in new_train + new_test)
    assert subsample_classes(train, test, subsample="all") == (train, test)
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES"):
        subsample_classes(train, subsample="half")


def write_split(path, split):
    with open(path, "w") as handle:
        json.dump(split, handle)


def test_split_file_reading_and_its_errors(tmp_path):
    good = {"train": [["a/1.jpg", 0, "cat"]], "val": [], "test": [["b/2.jpg", 1, "dog"]]}
    write_split(tmp_path / "s.json", good)
    split = read_split_file(str(tmp_path / "s.json"), "/root/images")
    assert split["train"] == [Item("/root/images/a/1.jpg", 0, "cat")]
    assert split["test"] == [Item("/root/images/b/2.jpg", 1, "dog")]

    (tmp_path / "broken.json").write_text('{"train": [')
    with pytest.raises(DatasetLayoutError, match="not valid JSON"):
        read_split_file(str(tmp_path / "broken.json"), "/r")
    write_split(tmp_path / "nokeys.json", {"train": []})
    with pytest.raises(DatasetLayoutError, match="train, val and test"):
        read_split_file(str(tmp_path / "nokeys.json"), "/r")
    for bad_path in ("../../etc/passwd", "/etc/passwd", "a/../../x.jpg"):
        write_split(tmp_path / "evil.json", {**good, "train": [[bad_path, 0, "cat"]]})
        with pytest.raises(DatasetLayoutError, match="leaves the dataset folder"):
            read_split_file(str(tmp_path / "evil.json"), "/r")
    write_split(tmp_path / "entry.json", {**good, "test": [["a.jpg", "zero", "cat"]]})
    with pytest.raises(DatasetLayoutError, match="bad label"):
        read_split_file(str(tmp_path / "entry.json"), "/r")


def test_fewshot_cache_is_json_relative_and_survives_moving_the_data(tmp_path):
    dataset_dir = tmp_path / "one" / "pets"
    train = [Item(str(dataset_dir / "images" / f"{c}_{i}.jpg"), c, f"c{c}") for c in range(3) for i in range(5)]
    cache = str(dataset_dir / "split_fewshot" / "shot_2-seed_1.json")
    key = {"shots": 2, "seed": 1}
    calls = []

    def build():
        calls.append(1)
        return fewshot_splits(train, None, 2, 1)

    first, _ = load_or_build_fewshot(cache, key, str(dataset_dir), build)
    stored = json.loads(open(cache).read())
    assert stored["key"] == key and all(not os.path.isabs(entry[0]) for entry in stored["train"])

    # Move the whole data folder: the cache still gives the same items, under the new location.
    moved = tmp_path / "two" / "pets"
    shutil.copytree(dataset_dir, moved)
    again, _ = load_or_build_fewshot(str(moved / "split_fewshot" / "shot_2-seed_1.json"), key, str(moved), build)
    assert len(calls) == 1
    assert [(os.path.relpath(i.impath, moved), i.label) for i in again] == \
        [(os.path.relpath(i.impath, dataset_dir), i.label) for i in first]

    # Another key, or a corrupt file, is rebuilt rather than trusted.
    load_or_build_fewshot(cache, {"shots": 2, "seed": 1, "source": "other"}, str(dataset_dir), build)
    assert len(calls) == 2
    with open(cache, "w") as handle:
        handle.write('{"key": ')
    rebuilt, _ = load_or_build_fewshot(cache, key, str(dataset_dir), build)
    assert len(calls) == 3 and rebuilt == first


# ----- validation folds: choosing hyperparameters without a test image or a new class -----
@pytest.mark.parametrize("n_classes, folds", [(10, 2), (11, 2), (40, 2), (20, 3)])
def test_validation_folds_never_hold_a_new_class_or_a_test_image(n_classes, folds):
    train, val, test = items(n_classes, 12, "train"), items(n_classes, 3, "val"), items(n_classes, 5, "test")
    shots, _ = fewshot_splits(train, val, 4, seed=1)
    base = list(range(math.ceil(n_classes / 2)))
    test_paths = {item.impath for item in test}
    pseudo_new_seen = []
    for fold in range(1, folds + 1):
        parts = {}
        for subsample in ("base", "new"):
            fold_train, fold_val, fold_test = validation_task(train, val, shots, subsample, fold, folds)
            assert fold_val is None
            names = {item.classname for item in fold_train}
            assert names == {item.classname for item in fold_test}  # the same classes, relabelled alike
            assert names <= {f"class{c}" for c in base}  # never a new class
            assert not {item.impath for item in fold_train + fold_test} & test_paths  # never a test image
            assert {item.impath for item in fold_train} <= {item.impath for item in shots}  # the run's few shots
            assert not {item.impath for item in fold_test} & {item.impath for item in shots}  # held out
            assert sorted({item.label for item in fold_train}) == list(range(len(names)))
            by_name = {item.classname: item.label for item in fold_train}
            assert all(by_name[item.classname] == item.label for item in fold_test)
            assert len(fold_test) == len(names) * (12 - 4 + 3)  # unused training images + validation images
            parts[subsample] = names
        assert not parts["base"] & parts["new"] and len(parts["new"]) >= 2 and len(parts["base"]) >= 2
        assert parts["base"] | parts["new"] == {f"class{c}" for c in base}
        pseudo_new_seen.append(parts["new"])
    # The folds' pseudo-new classes partition the base classes; the partition is fixed.
    assert set().union(*pseudo_new_seen) == {f"class{c}" for c in base}
    assert sum(len(names) for names in pseudo_new_seen) == len(base)
    assert validation_folds(base, folds) == validation_folds(base, folds)


def test_validation_task_refuses_what_it_cannot_do():
    train, val = items(10, 6), items(10, 2, "val")
    shots, _ = fewshot_splits(train, val, 2, seed=1)
    with pytest.raises(ValueError, match="SUBSAMPLE_CLASSES base or new"):
        validation_task(train, val, shots, "all", 1)
    with pytest.raises(ValueError, match="from 1 to DATASET.VAL_FOLDS=2"):
        validation_task(train, val, shots, "base", 3)
    with pytest.raises(ValueError, match="too few"):
        validation_task(items(6, 6), None, fewshot_splits(items(6, 6), None, 2, seed=1)[0], "base", 1)
    with pytest.raises(ValueError, match="at least 2"):
        validation_folds([0, 1, 2, 3], 1)
    full, _ = fewshot_splits(train, None, 6, seed=1)  # every training image is a shot and there is no val split
    with pytest.raises(ValueError, match="No held-out images"):
        validation_task(train, None, full, "base", 1)
