"""Datasets through Dassl: CoOp's selection of items, and clear errors for broken layouts."""
import json
import math
import os
import random

import numpy as np
import pytest
from fixtures import make_split_dataset

pytestmark = pytest.mark.integration


def cfg_for(root, name="OxfordPets", shots=-1, seed=1, subsample="all"):
    from trainers.config import get_cfg_default

    cfg = get_cfg_default()
    cfg.DATASET.ROOT, cfg.DATASET.NAME = str(root), name
    cfg.DATASET.NUM_SHOTS, cfg.SEED, cfg.DATASET.SUBSAMPLE_CLASSES = shots, seed, subsample
    return cfg


def build(cfg):
    import datasets

    datasets.register_with_dassl()
    from dassl.data.datasets import build_dataset

    return build_dataset(cfg)


def triples(data):
    return [(d.impath, d.label, d.classname) for d in data]


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("subsample", ["base", "new"])
def test_selects_the_same_items_as_coop(tmp_path, seed, subsample):
    """CoOp: set_random_seed(seed), read the split, Dassl's generate_fewshot_dataset on train then val
    (min(k, 4) shots), then keep half of the sorted labels and relabel."""
    from dassl.data.datasets import DatasetBase, Datum

    classes = [f"breed_{i}" for i in range(7)]
    folder = make_split_dataset(str(tmp_path), classes=classes, per_split=(9, 5, 2))
    ours = build(cfg_for(tmp_path, shots=4, seed=seed, subsample=subsample))

    with open(os.path.join(folder, "split_zhou_OxfordPets.json")) as handle:
        split = json.load(handle)
    image_dir = os.path.join(folder, "images")
    read = {name: [Datum(impath=os.path.join(image_dir, p), label=y, classname=c) for p, y, c in split[name]]
            for name in split}
    random.seed(seed)
    np.random.seed(seed)
    dassl_base = DatasetBase.__new__(DatasetBase)
    train = dassl_base.generate_fewshot_dataset(read["train"], num_shots=4)
    val = dassl_base.generate_fewshot_dataset(read["val"], num_shots=4)
    labels = sorted({d.label for d in train})
    half = math.ceil(len(labels) / 2)
    keep = labels[:half] if subsample == "base" else labels[half:]
    relabel = {y: i for i, y in enumerate(keep)}

    def coop(data):
        return [(d.impath, relabel[d.label], d.classname) for d in data if d.label in relabel]

    assert triples(ours.train_x) == coop(train)
    assert triples(ours.val) == coop(val)
    assert triples(ours.test) == coop(read["test"])
    # The second run reads the JSON cache and gives the same items.
    assert triples(build(cfg_for(tmp_path, shots=4, seed=seed, subsample=subsample)).train_x) == coop(train)


def test_missing_root_folder_and_split_file_are_explained(tmp_path):
    from datasets.splits import DatasetLayoutError

    with pytest.raises(DatasetLayoutError, match="does not exist. Set DATA"):
        build(cfg_for(tmp_path / "nowhere"))
    with pytest.raises(DatasetLayoutError, match=r"oxford_pets is missing"):
        build(cfg_for(tmp_path))
    os.makedirs(tmp_path / "oxford_pets" / "images")
    with pytest.raises(DatasetLayoutError, match=r"split_zhou_OxfordPets.json is missing.*1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"):
        build(cfg_for(tmp_path))


def test_missing_images_are_counted_and_named(tmp_path):
    from datasets.splits import DatasetLayoutError

    folder = make_split_dataset(str(tmp_path), classes=["a", "b"], per_split=(2, 1, 1))
    os.remove(os.path.join(folder, "images", "b_train_1.jpg"))
    with pytest.raises(DatasetLayoutError, match=r"1 of the 8 images .* missing, e.g. .*b_train_1.jpg"):
        build(cfg_for(tmp_path))


def test_corrupt_image_is_named_when_read(tmp_path):
    from dassl.data.transforms import build_transform

    from common.images import ImageReadError
    from trainers.data import CheckedImages

    folder = make_split_dataset(str(tmp_path), classes=["a", "b"], per_split=(2, 1, 1))
    bad = os.path.join(folder, "images", "a_test_0.jpg")
    with open(bad, "wb") as handle:
        handle.write(b"this is not a jpeg")
    cfg = cfg_for(tmp_path)
    cfg.INPUT.SIZE = (32, 32)
    dataset = build(cfg)
    wrapper = CheckedImages(cfg, dataset.test, transform=build_transform(cfg, is_train=False))
    with pytest.raises(ImageReadError, match="a_test_0.jpg"):
        [wrapper[i] for i in range(len(wrapper))]


def fake_imagenet(root, wnids=("n01", "n02", "n03"), per_class=3):
    from fixtures import write_image

    rng = np.random.default_rng(0)
    folder = os.path.join(root, "imagenet")
    for split in ("train", "val"):
        for label, wnid in enumerate(wnids):
            for i in range(per_class):
                write_image(os.path.join(folder, "images", split, wnid, f"{wnid}_{i}.JPEG"), label, len(wnids), rng)
    with open(os.path.join(folder, "classnames.txt"), "w") as handle:
        handle.writelines(f"{wnid} class {wnid}\n" for wnid in wnids)
    return folder


def test_imagenet_folders_classnames_and_fewshot(tmp_path):
    fake_imagenet(str(tmp_path))
    data = build(cfg_for(tmp_path, "ImageNet", shots=2, seed=1))
    assert data.classnames == ["class n01", "class n02", "class n03"]
    assert len(data.train_x) == 6 and len(data.test) == 9
    assert data.val is data.test or triples(data.val) == triples(data.test)
    assert all("/images/val/" in d.impath for d in data.test)


def test_imagenet_variants_are_test_only_folder_datasets(tmp_path):
    from fixtures import write_image

    rng = np.random.default_rng(0)
    folder = tmp_path / "imagenet-adversarial"
    for wnid in ("n02", "n01"):
        for i in range(2):
            write_image(str(folder / "imagenet-a" / wnid / f"{i}.jpg"), 0, 1, rng)
    (folder / "imagenet-a" / "README.txt").write_text("not a class")
    (folder / "classnames.txt").write_text("n01 goldfish\nn02 great white shark\nn03 tiger shark\n")
    data = build(cfg_for(tmp_path, "ImageNetA", shots=16))
    assert data.classnames == ["goldfish", "great white shark"]  # sorted folders, 200-class style subset
    assert triples(data.test) == triples(data.train_x) and len(data.test) == 4

    v2 = tmp_path / "imagenetv2"
    for label in range(3):
        write_image(str(v2 / "imagenetv2-matched-frequency-format-val" / str(label) / "a.jpeg"), 0, 1, rng)
    (v2 / "classnames.txt").write_text("n01 goldfish\nn02 great white shark\nn03 tiger shark\n")
    data = build(cfg_for(tmp_path, "ImageNetV2"))
    assert [(d.label, d.classname) for d in data.test] == [(0, "goldfish"), (1, "great white shark"), (2, "tiger shark")]


def test_the_fewshot_cache_is_rebuilt_when_the_split_file_changes(tmp_path):
    """A cache keyed without the split file would hand back shots that the new split no longer has."""
    make_split_dataset(str(tmp_path), per_split=(6, 2, 4))
    before = triples(build(cfg_for(tmp_path, shots=2, seed=1)).train_x)
    split_path = tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json"
    split = json.loads(split_path.read_text())
    chosen = {impath for impath, _, _ in before}
    # The images drawn before leave the train split (they become validation images): the split file changes.
    moved = [entry for entry in split["train"] if str(tmp_path / "oxford_pets" / "images" / entry[0]) in chosen]
    split["train"] = [entry for entry in split["train"] if entry not in moved]
    split["val"] += moved
    split_path.write_text(json.dumps(split))
    after = triples(build(cfg_for(tmp_path, shots=2, seed=1)).train_x)
    assert len(after) == len(before) and not chosen & {impath for impath, _, _ in after}
