"""Validation of CoOp split files (``datasets.splits.validate_split``): every malformed file is one
``DatasetLayoutError`` naming the file, the split, the entry and what to do, both when a dataset loads its split
and in ``python -m datasets.prepare --check``; suspicious but usable files only warn."""
import json
import os
import random
import re
import warnings

import pytest

from datasets.splits import DatasetLayoutError, Item, SplitFileWarning, read_split_file

SPLIT_FILE = "split_zhou_OxfordPets.json"  # OxfordPets: a dataset read through its CoOp split file


def entries(n_classes, per_class, split, names=None):
    names = names or [f"class{c}" for c in range(n_classes)]
    return [[f"{names[c]}/{split}_{i}.jpg", c, names[c]] for c in range(n_classes) for i in range(per_class)]


def valid_split(n_classes=4):
    return {"train": entries(n_classes, 3, "train"), "val": entries(n_classes, 1, "val"),
            "test": entries(n_classes, 2, "test")}


def write_dataset(root, split=None, text=None):
    """``root/oxford_pets`` with the split file (``split`` as JSON, or raw ``text``) and an (empty) image for each
    relative path it lists, so that only the split file itself can be at fault. The split file's path."""
    folder = os.path.join(root, "oxford_pets")
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    path = os.path.join(folder, SPLIT_FILE)
    with open(path, "w") as handle:
        handle.write(text if text is not None else json.dumps(split))
    for name in ("train", "val", "test"):
        for entry in (split or {}).get(name) or []:
            if isinstance(entry, list) and entry and isinstance(entry[0], str) and not os.path.isabs(entry[0]) \
                    and ".." not in entry[0]:
                image = os.path.join(folder, "images", entry[0])
                os.makedirs(os.path.dirname(image), exist_ok=True)
                open(image, "wb").close()
    return path


def with_entry(split_name, index, entry, n_classes=4):
    split = valid_split(n_classes)
    split[split_name][index] = entry
    return split


def relabelled(old, new):
    """The valid split with every ``old`` label written ``new`` (still 4 distinct labels)."""
    return {name: [[p, new if y == old else y, c] for p, y, c in es] for name, es in valid_split().items()}


def deep_nesting(depth=100_000):
    return '{"train": ' + "[" * depth + "]" * depth + ', "val": [], "test": []}'


# (id, split file as JSON or raw text, what the message must say, the split it names, the entry index it names)
FAULTS = [
    ("train-null", {**valid_split(), "train": None}, r"train split: expected a list .* got null", "train", None),
    ("all-empty", {"train": [], "val": [], "test": []}, r"train split: it is empty", "train", None),
    ("test-empty", {**valid_split(), "test": []}, r"test split: it is empty", "test", None),
    ("val-null", {**valid_split(), "val": None}, r"val split: expected a list .*write \[\] .* got null", "val", None),
    ("split-object", {**valid_split(), "test": {"a.jpg": 0}}, r"got an object", "test", None),
    ("label-99", relabelled(3, 99),
     r"label 99 is out of range: the file has 4 distinct labels, so they must be 0\.\.3 .*label 3 is missing",
     "train", 9),
    ("label-1e30", with_entry("test", 2, ["class1/y.jpg", 10**30, "huge"]),
     r"label 1000000000000000000000000000000 is out of range.* label 4 is missing", "test", 2),
    ("gap", {name: [e for e in es if e[1] != 1] for name, es in valid_split().items()},
     r"label 3 is out of range: the file has 3 distinct labels.* label 1 is missing", "train", 6),
    ("two-names", with_entry("test", 3, ["class1/z.jpg", 1, "kitten"]),
     r"label 1 is named 'kitten' here but 'class1' in train entry 3; a label must have one class name", "test", 3),
    ("bool-label", with_entry("train", 0, ["class0/a.jpg", True, "class0"]), r"bad label True", "train", 0),
    ("float-label", with_entry("val", 1, ["class1/a.jpg", 1.0, "class1"]), r"bad label 1\.0", "val", 1),
    ("negative-label", with_entry("train", 1, ["class0/a.jpg", -1, "class0"]), r"bad label -1", "train", 1),
    ("string-label", with_entry("test", 0, ["class0/a.jpg", "0", "class0"]), r"bad label '0'", "test", 0),
    ("int-path", with_entry("train", 2, [7, 0, "class0"]), r"expected a relative image path, got 7", "train", 2),
    ("null-classname", with_entry("train", 4, ["class1/a.jpg", 1, None]), r"bad class name None", "train", 4),
    ("short-entry", with_entry("val", 0, ["class0/a.jpg", 0]), r"each entry must be \[image path, label, class name\]",
     "val", 0),
    ("entry-is-string", with_entry("test", 1, "class0/a.jpg"), r"each entry must be", "test", 1),
    ("absolute-path", with_entry("train", 1, ["/etc/passwd", 0, "class0"]), r"leaves the dataset folder", "train", 1),
    ("dotdot-path", with_entry("test", 4, ["a/../../x.jpg", 2, "class2"]), r"leaves the dataset folder", "test", 4),
    ("deep-nesting", deep_nesting(), r"nests lists or objects too deeply", None, None),
]


@pytest.mark.parametrize("content, message, split_name, index", [fault[1:] for fault in FAULTS],
                         ids=[fault[0] for fault in FAULTS])
def test_each_fault_is_one_clear_error_naming_file_split_and_entry(tmp_path, content, message, split_name, index):
    text = content if isinstance(content, str) else None
    path = write_dataset(str(tmp_path), None if text else content, text)
    with pytest.raises(DatasetLayoutError, match=message) as caught:
        read_split_file(path, str(tmp_path / "oxford_pets" / "images"))
    text = str(caught.value)
    assert path in text
    if split_name is not None:
        assert f"{split_name} split" in text or f"{split_name} entry" in text
    if index is not None:
        assert f"{split_name} entry {index}:" in text
    assert "python -m datasets.prepare" in text or "download it again" in text  # what to do
    assert len(text) < 1000  # a message, not a dump of the file


def test_a_valid_split_loads_the_same_items_in_the_same_order_without_warnings(tmp_path):
    names = ["Abyssinian", "chat_été", "Bengal", "x"]
    split = {name: entries(4, count, name, names) for name, count in (("train", 5), ("val", 2), ("test", 3))}
    for name, seed in zip(split, (1, 2, 3)):
        random.Random(seed).shuffle(split[name])  # labels interleaved: the order must be kept as it is
    path = write_dataset(str(tmp_path), split)
    root = str(tmp_path / "oxford_pets" / "images")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read = read_split_file(path, root)
    assert read == {name: [Item(os.path.join(root, p), y, c) for p, y, c in split[name]] for name in split}
    # An empty validation split is allowed.
    path = write_dataset(str(tmp_path), {**split, "val": []})
    assert read_split_file(path, root)["val"] == []


def test_duplicates_and_untrained_evaluation_labels_warn_but_load(tmp_path):
    split = valid_split()
    split["train"].append(list(split["train"][4]))  # the same image twice in train
    split["test"].append(list(split["train"][0]))  # a training image also in test
    path = write_dataset(str(tmp_path), split)
    with pytest.warns(SplitFileWarning) as record:
        read = read_split_file(path, "/r")
    messages = [str(warning.message) for warning in record]
    assert any("train split: 1 images are listed more than once (e.g. train entries 4 and 12" in m for m in messages)
    assert any("the train and test splits share 1 images (e.g. train entry 0 is test entry 8" in m for m in messages)
    assert len(read["train"]) == 13 and len(read["test"]) == 9

    split = valid_split()
    split["test"] = [entry for entry in split["test"]] + [["class4/t.jpg", 4, "class4"]]  # label 4 only in test
    path = write_dataset(str(tmp_path), split)
    with pytest.warns(SplitFileWarning, match=r"test split: 1 of its labels never appear in the train split \(e\.g\. "
                                              r"label 4 'class4' at test entry 8\)"):
        read = read_split_file(path, "/r")
    assert read["test"][-1] == Item("/r/class4/t.jpg", 4, "class4")


def test_class_names_no_longer_depend_on_the_hash_seed(tmp_path):
    """Dassl keeps one name per label from a set of (label, name) pairs, so with two names for a label the name a run
    used depended on PYTHONHASHSEED: such a file is refused instead, wherever the odd name is."""
    first = valid_split()
    first["train"].insert(0, ["class0/first.jpg", 0, "other"])  # the odd name comes first
    later = with_entry("val", 0, ["class0/v.jpg", 0, "other"])  # the odd name comes later, in another split
    for split, where in ((first, "train entry 1: label 0 is named 'class0' here but 'other' in train entry 0"),
                         (later, "val entry 0: label 0 is named 'other' here but 'class0' in train entry 0")):
        path = write_dataset(str(tmp_path), split)
        with pytest.raises(DatasetLayoutError, match=re.escape(where)):
            read_split_file(path, "/r")


# ----- the same validation when training loads the dataset and in python -m datasets.prepare --check -----
CHECKED = ["train-null", "all-empty", "label-99", "label-1e30", "two-names", "deep-nesting", "absolute-path"]


@pytest.mark.parametrize("fault", CHECKED)
def test_check_and_dataset_loading_refuse_the_same_faults(tmp_path, fault):
    pytest.importorskip("dassl")
    from dassl.data.datasets import build_dataset

    from datasets.prepare.cli import main
    from trainers.config import get_cfg_default

    content, message = next((f[1], f[2]) for f in FAULTS if f[0] == fault)
    text = content if isinstance(content, str) else None
    write_dataset(str(tmp_path), None if text else content, text)

    logs = []
    assert main(["--check", "oxford_pets", "--root", str(tmp_path), "--no-progress"], log=logs.append) == 1
    output = "\n".join(logs)
    row = next(line for line in output.splitlines() if line.startswith("oxford_pets "))
    assert "ok" not in row.split()
    assert DatasetLayoutError.__name__ not in output and "Traceback" not in output
    assert re.search(message, output), output

    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS = str(tmp_path), "OxfordPets", -1
    with pytest.raises(DatasetLayoutError, match=message):
        build_dataset(cfg)


def test_check_and_dataset_loading_accept_a_valid_split(tmp_path):
    pytest.importorskip("dassl")
    from dassl.data.datasets import build_dataset

    from datasets.prepare.cli import main
    from trainers.config import get_cfg_default

    write_dataset(str(tmp_path), valid_split())
    logs = []
    assert main(["--check", "oxford_pets", "--root", str(tmp_path), "--no-progress"], log=logs.append) == 0
    assert next(line for line in logs[-1].splitlines() if line.startswith("oxford_pets ")).split()[:5] == \
        ["oxford_pets", "ok", "24", "/", "24"]
    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS = str(tmp_path), "OxfordPets", -1
    dataset = build_dataset(cfg)
    assert dataset.num_classes == 4 and len(dataset.train_x) == 12 and len(dataset.test) == 8
    assert dataset.lab2cname == {c: f"class{c}" for c in range(4)}


def test_an_evaluation_only_dataset_may_have_no_training_images(tmp_path):
    from datasets.splits import DatasetLayoutError, read_split_file

    path = tmp_path / "split.json"
    path.write_text('{"train": [], "val": [], "test": [["a.jpg", 0, "cat"], ["b.jpg", 1, "dog"]]}')
    with pytest.raises(DatasetLayoutError, match="train split: it is empty"):
        read_split_file(str(path), str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning that its classes are never trained on
        items = read_split_file(str(path), str(tmp_path), test_only=True)
    assert [(item.label, item.classname) for item in items["test"]] == [(0, "cat"), (1, "dog")]
