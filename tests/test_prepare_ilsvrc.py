"""ImageNet from fake official archives: per-class training tars, the flat validation set sorted into class
folders with the devkit's ground truth (or Kaggle's csv)."""
import io
import os

import numpy as np
import pytest
from archive_server import tar_bytes

from datasets.prepare import ilsvrc
from datasets.prepare.sources import Download

# ILSVRC2012_ID -> wnid, deliberately not in wnid order (as in the real devkit, where ID 1 is n02119789).
LEAF_IDS = {1: "n02119789", 2: "n01440764", 3: "n04592741"}
NON_LEAF = (4, "n00001740")  # a synset with children: not a class
VAL_TRUTH = [3, 1, 1, 2, 3, 2, 1]  # the ground-truth ILSVRC2012_ID of validation images 1..7


def val_name(index):
    return f"ILSVRC2012_val_{index:08d}.JPEG"


def fake_devkit():
    from scipy.io import savemat

    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    rows = [(ident, wnid, f"class {ident}", 0) for ident, wnid in LEAF_IDS.items()]
    rows.append((NON_LEAF[0], NON_LEAF[1], "entity", 3))
    buffer = io.BytesIO()
    savemat(buffer, {"synsets": np.array(rows, dtype=dtype)})
    truth = "".join(f"{ident}\n" for ident in VAL_TRUTH).encode()
    return tar_bytes({
        "ILSVRC2012_devkit_t12/data/meta.mat": buffer.getvalue(),
        "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt": truth,
    })


def fake_val_tar():
    return tar_bytes({val_name(i): f"val{i}".encode() for i in range(1, len(VAL_TRUTH) + 1)}, compress=False)


def fake_train_tar():
    inner = {wnid: tar_bytes({f"{wnid}_{k}.JPEG": f"{wnid}{k}".encode() for k in range(2)}, compress=False)
             for wnid in LEAF_IDS.values()}
    return tar_bytes({f"{wnid}.tar": data for wnid, data in inner.items()}, compress=False)


def expected_val_layout():
    return {f"{LEAF_IDS[ident]}/{val_name(i)}" for i, ident in enumerate(VAL_TRUTH, start=1)}


def files_under(folder):
    return {os.path.relpath(os.path.join(here, name), folder) for here, _, names in os.walk(folder) for name in names}


ARCHIVES = (Download("train.tar", (), "test"), Download("val.tar", (), "test"), Download("devkit.tar.gz", (), "test"))


def locator(paths):
    return lambda download: paths.get(download.name)


def test_the_flat_validation_set_is_sorted_into_class_folders_with_the_devkit(tmp_path):
    devkit = tmp_path / "devkit.tar.gz"
    devkit.write_bytes(fake_devkit())
    labels = ilsvrc.labels_from_devkit(str(devkit))
    assert labels == {val_name(i): LEAF_IDS[ident] for i, ident in enumerate(VAL_TRUTH, start=1)}

    val_dir = tmp_path / "images" / "val"
    val_dir.mkdir(parents=True)
    for i in range(1, len(VAL_TRUTH) + 1):
        (val_dir / val_name(i)).write_bytes(f"val{i}".encode())
    assert ilsvrc.sort_val(str(val_dir), labels, progress=False) == len(VAL_TRUTH)
    assert files_under(val_dir) == expected_val_layout()
    assert (val_dir / LEAF_IDS[3] / val_name(1)).read_bytes() == b"val1"
    assert ilsvrc.sort_val(str(val_dir), labels, progress=False) == 0  # a rerun moves nothing


def test_kaggle_csv_gives_the_same_labels(tmp_path):
    csv_path = tmp_path / "LOC_val_solution.csv"
    rows = [f"{val_name(i)[:-5]},{LEAF_IDS[ident]} 1 2 3 4 {LEAF_IDS[ident]} 5 6 7 8"
            for i, ident in enumerate(VAL_TRUTH, start=1)]
    csv_path.write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    assert ilsvrc.labels_from_kaggle_csv(str(csv_path)) == {
        val_name(i): LEAF_IDS[ident] for i, ident in enumerate(VAL_TRUTH, start=1)
    }


def test_images_without_a_label_stop_the_sorting(tmp_path):
    val_dir = tmp_path / "val"
    val_dir.mkdir()
    (val_dir / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(ilsvrc.ValLabelError, match="holiday.jpg"):
        ilsvrc.sort_val(str(val_dir), {val_name(1): "n1"}, progress=False)
    assert (val_dir / "holiday.jpg").exists()


def test_training_classes_are_extracted_one_folder_each_and_an_interrupted_run_continues(tmp_path):
    train_tar = tmp_path / "train.tar"
    train_tar.write_bytes(fake_train_tar())
    train_dir = tmp_path / "images" / "train"
    assert ilsvrc.extract_train(str(train_tar), str(train_dir), progress=False) == 3
    expected = {f"{wnid}/{wnid}_{k}.JPEG" for wnid in LEAF_IDS.values() for k in range(2)}
    assert files_under(train_dir) == expected
    # A class missing (as after an interrupted run) is extracted again; the others are left alone.
    for name in os.listdir(train_dir / LEAF_IDS[2]):
        os.remove(train_dir / LEAF_IDS[2] / name)
    os.rmdir(train_dir / LEAF_IDS[2])
    assert ilsvrc.extract_train(str(train_tar), str(train_dir), progress=False) == 1
    assert files_under(train_dir) == expected


def test_prepare_imagenet_builds_both_splits_from_the_archives(tmp_path):
    paths = {}
    for download, data in zip(ARCHIVES, (fake_train_tar(), fake_val_tar(), fake_devkit())):
        paths[download.name] = str(tmp_path / download.name)
        (tmp_path / download.name).write_bytes(data)
    folder = tmp_path / "imagenet"
    image_dir = folder / "images"
    classes = {wnid: f"name of {wnid}" for wnid in LEAF_IDS.values()}
    logs = []
    ilsvrc.prepare_imagenet(str(folder), str(image_dir), classes, ARCHIVES, locator(paths), False, logs.append)
    assert files_under(image_dir / "val") == expected_val_layout()
    assert {name.split("/")[0] for name in files_under(image_dir / "train")} == set(LEAF_IDS.values())
    assert ilsvrc.val_hint(str(folder), str(image_dir)) is None


def test_flat_validation_images_without_labels_are_reported(tmp_path):
    folder = tmp_path / "imagenet"
    val_dir = folder / "images" / "val"
    val_dir.mkdir(parents=True)
    (val_dir / val_name(1)).write_bytes(b"x")
    logs = []
    ilsvrc.prepare_imagenet(str(folder), str(folder / "images"), {}, ARCHIVES, locator({}), False, logs.append)
    assert any("devkit.tar.gz" in line and "not sorted" in line for line in logs)
    assert "1 validation images lie directly in" in ilsvrc.val_hint(str(folder), str(folder / "images"))


@pytest.mark.parametrize("bad", ["../../../../tmp/x", "/tmp/x", "n0211978", "n021197890", "x02119789"])
def test_a_kaggle_class_id_that_is_not_a_wordnet_id_is_refused_and_nothing_moves(tmp_path, bad):
    """A crafted LOC_val_solution.csv cannot place an image outside the validation folder."""
    folder = tmp_path / "imagenet"
    val_dir = folder / "images" / "val"
    val_dir.mkdir(parents=True)
    for i in range(1, 4):
        (val_dir / val_name(i)).write_bytes(b"x")
    rows = [f"{val_name(1)[:-5]},{LEAF_IDS[1]} 1 2 3 4", f"{val_name(2)[:-5]},{bad} 1 2 3 4",
            f"{val_name(3)[:-5]},{LEAF_IDS[2]} 1 2 3 4"]
    (folder / ilsvrc.KAGGLE_LABELS).write_text("ImageId,PredictionString\n" + "\n".join(rows) + "\n")
    with pytest.raises(ilsvrc.ValLabelError, match=r"line 3: class id .* is not a WordNet id"):
        ilsvrc.labels_from_kaggle_csv(str(folder / ilsvrc.KAGGLE_LABELS))
    classes = {wnid: wnid for wnid in LEAF_IDS.values()}
    with pytest.raises(ilsvrc.ValLabelError, match="line 3"):
        ilsvrc.prepare_imagenet(str(folder), str(folder / "images"), classes, ARCHIVES, locator({}), False,
                                lambda _: None)
    assert sorted(p.name for p in val_dir.iterdir()) == [val_name(i) for i in range(1, 4)]  # nothing moved
    assert not (tmp_path / "tmp").exists()


def test_a_class_id_outside_the_class_list_is_refused(tmp_path):
    csv_path = tmp_path / "LOC_val_solution.csv"
    csv_path.write_text(f"ImageId,PredictionString\n{val_name(1)[:-5]},n99999999 1 2 3 4\n")
    with pytest.raises(ilsvrc.ValLabelError, match="line 2: class id n99999999 is not one of the 3 ImageNet"):
        ilsvrc.labels_from_kaggle_csv(str(csv_path), set(LEAF_IDS.values()))
    val_dir = tmp_path / "val"
    val_dir.mkdir()
    (val_dir / val_name(1)).write_bytes(b"x")
    with pytest.raises(ilsvrc.ValLabelError, match="not a WordNet id"):
        ilsvrc.sort_val(str(val_dir), {val_name(1): "../escape"}, progress=False)
    assert (val_dir / val_name(1)).exists() and not (tmp_path / "escape").exists()
