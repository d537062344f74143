"""ImageNet (ILSVRC2012) from its official archives: the training tar holds one tar per class; the validation tar
holds 50,000 images in one flat folder, whose classes are given by the devkit (``data/meta.mat`` maps the
ILSVRC2012_ID of ``data/ILSVRC2012_validation_ground_truth.txt`` to a WordNet id) or by Kaggle's
``LOC_val_solution.csv``. The layout produced is the one ``datasets/imagenet.py`` reads:
``images/train/<wnid>/`` and ``images/val/<wnid>/``.
"""
import csv
import io
import os
import re
import shutil

from tqdm import tqdm

from .unpack import BrokenArchiveError, Budget, ProgressReader, extract, extract_tar_stream, open_tar, reading

GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
META = "data/meta.mat"
KAGGLE_LABELS = "LOC_val_solution.csv"


class ValLabelError(ValueError):
    """The validation labels cannot be read, or do not cover the images found."""


# A class id names a folder: only a WordNet id (n + 8 digits) may do that, so a label file cannot place an image
# outside the validation folder.
WNID = re.compile(r"n\d{8}")


def check_wnid(wnid, classes, where):
    """``wnid`` if it is a WordNet id among ``classes`` (when given); else ValLabelError naming ``where``."""
    if not isinstance(wnid, str) or not WNID.fullmatch(wnid):
        raise ValLabelError(f"{where}: class id {wnid!r} is not a WordNet id (n followed by 8 digits); the file is "
                            "not ImageNet's validation ground truth, or it is damaged.")
    if classes is not None and wnid not in classes:
        raise ValLabelError(f"{where}: class id {wnid} is not one of the {len(classes)} ImageNet classes of "
                            "classnames.txt.")
    return wnid


def extract_train(train_tar, train_dir, progress=True, limits=None):
    """Unpack each per-class tar of the training archive into ``train_dir/<wnid>/``.

    A class is written to a hidden folder and renamed when complete, so a class folder that exists is whole and
    an interrupted run continues with the classes still missing. Returns the number of classes extracted now.
    ``limits``: what the archive may write (``unpack.ExpansionLimits``); ``BrokenArchiveError`` (``path`` =
    ``train_tar``) when it is damaged."""
    os.makedirs(train_dir, exist_ok=True)
    extracted = 0
    label = os.path.basename(train_tar)
    budget = Budget(train_tar, limits)
    with open(train_tar, "rb") as raw, tqdm(total=os.path.getsize(train_tar), unit="B", unit_scale=True,
                                            desc=f"extracting {label}", disable=not progress) as bar:
        with open_tar(label, train_tar, fileobj=ProgressReader(raw, bar), mode="r|") as outer:
            members = iter(outer)
            while True:
                with reading(label, train_tar):
                    member = next(members, None)
                if member is None:
                    break
                if not (member.isfile() and member.name.endswith(".tar")):
                    continue
                wnid = os.path.basename(member.name)[: -len(".tar")]
                final = os.path.join(train_dir, wnid)
                if os.path.isdir(final):
                    continue
                partial = os.path.join(train_dir, f".{wnid}.partial")
                inner_label = f"{label}/{member.name}"
                with reading(inner_label, train_tar):
                    source = outer.extractfile(member)
                inner = open_tar(inner_label, train_tar, fileobj=source, mode="r|")
                try:
                    extract_tar_stream(inner, partial, inner_label, budget)
                except BrokenArchiveError as err:
                    err.path = train_tar
                    raise
                os.replace(partial, final)
                extracted += 1
    return extracted


def labels_from_devkit(devkit_archive, limits=None):
    """``{image file name: wnid}`` from the ILSVRC2012 devkit archive (the two files read count against
    ``limits``, ``unpack.ExpansionLimits``)."""
    from scipy.io import loadmat

    wanted = {}
    label = os.path.basename(devkit_archive)
    budget = Budget(devkit_archive, limits)
    with open_tar(label, devkit_archive, name=devkit_archive) as tar:
        with reading(label, devkit_archive):
            members = tar.getmembers()
        for member in members:
            for suffix in (GROUND_TRUTH, META):
                if member.isfile() and member.name.endswith(suffix):
                    budget.declare(member.size, member.name)
                    with reading(label, devkit_archive):
                        wanted[suffix] = tar.extractfile(member).read()
    missing = [suffix for suffix in (GROUND_TRUTH, META) if suffix not in wanted]
    if missing:
        raise ValLabelError(f"{devkit_archive} has no {', '.join(missing)}: it is not the ILSVRC2012 devkit.")
    synsets = loadmat(io.BytesIO(wanted[META]), squeeze_me=True)["synsets"]
    # The 1,000 classes are the leaves of the synset tree (no children); their ILSVRC2012_ID numbers the labels
    # used by the ground-truth file.
    wnid_of = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    labels = {}
    for index, line in enumerate(wanted[GROUND_TRUTH].decode().split(), start=1):
        labels[f"ILSVRC2012_val_{index:08d}.JPEG"] = wnid_of[int(line)]
    return labels


def labels_from_kaggle_csv(path, classes=None):
    """``{image file name: wnid}`` from Kaggle's ``LOC_val_solution.csv`` (ImageId, PredictionString whose first
    word is the wnid); every wnid is checked (``check_wnid``), naming the line of a bad one."""
    labels = {}
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        for row in reader:
            where = f"{path} line {reader.line_num}"
            words = (row.get("PredictionString") or "").split()
            if not row.get("ImageId") or not words:
                raise ValLabelError(f"{where}: expected ImageId,PredictionString with a class id first; got {row}")
            labels[row["ImageId"] + ".JPEG"] = check_wnid(words[0], classes, where)
    return labels


def unsorted_val_images(val_dir):
    """Image files lying directly in ``val_dir`` (not yet in class folders)."""
    if not os.path.isdir(val_dir):
        return []
    return sorted(entry.name for entry in os.scandir(val_dir) if entry.is_file() and not entry.name.startswith("."))


def sort_val(val_dir, labels, progress=True, classes=None):
    """Move each flat validation image into ``val_dir/<wnid>/``; returns how many were moved. Safe to rerun:
    only images still lying flat are moved. Every label is checked before anything moves (``check_wnid``)."""
    flat = unsorted_val_images(val_dir)
    unknown = [name for name in flat if name not in labels]
    if unknown:
        raise ValLabelError(f"{len(unknown)} images in {val_dir} have no label in the ground truth, e.g. {unknown[0]}: "
                            "are they ILSVRC2012 validation images?")
    for name in flat:
        check_wnid(labels[name], classes, f"the label of {name}")
    for name in tqdm(flat, desc="sorting validation images into class folders", unit="img", disable=not progress):
        folder = os.path.join(val_dir, labels[name])
        os.makedirs(folder, exist_ok=True)
        os.replace(os.path.join(val_dir, name), os.path.join(folder, name))
    return len(flat)


def extract_val(val_archive, val_dir, progress=True, limits=None):
    """Extract the validation archive into ``val_dir`` (absent or empty) through a hidden staging folder beside
    it, so that a damaged or refused archive leaves no part of itself in ``val_dir`` (which would then count as
    extracted)."""
    staging = os.path.join(os.path.dirname(val_dir), f".{os.path.basename(val_dir)}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        extract(val_archive, staging, progress, limits=limits)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if os.path.isdir(val_dir):
        os.rmdir(val_dir)
    os.replace(staging, val_dir)


def prepare_imagenet(dataset_folder, image_dir, class_folders, archives, locate, progress=True, log=print,
                     limits=None):
    """Build ``image_dir/train`` and ``image_dir/val`` from whatever of the official ``archives`` (the training,
    validation and devkit ``Download``s) ``locate(download)`` finds (it returns a verified path or None), sorting
    flat validation images into class folders. ``class_folders``: the wnids of ``classnames.txt``. ``limits``:
    what each archive may write (``unpack.ExpansionLimits``). A damaged archive raises ``BrokenArchiveError``
    whose ``path`` is the one ``locate`` gave."""
    train_archive, val_archive, devkit_archive = archives
    train_dir, val_dir = os.path.join(image_dir, "train"), os.path.join(image_dir, "val")
    have_train = os.path.isdir(train_dir) and set(class_folders) <= set(os.listdir(train_dir))
    if not have_train:
        archive = locate(train_archive)
        if archive:
            log(f"Extracted {extract_train(archive, train_dir, progress, limits)} training classes into {train_dir}")
    if not os.path.isdir(val_dir) or not os.listdir(val_dir):
        archive = locate(val_archive)
        if archive:
            extract_val(archive, val_dir, progress, limits)
    if unsorted_val_images(val_dir):
        kaggle = os.path.join(dataset_folder, KAGGLE_LABELS)
        devkit = locate(devkit_archive)
        if devkit:
            labels = labels_from_devkit(devkit, limits)
        elif os.path.isfile(kaggle):
            labels = labels_from_kaggle_csv(kaggle, set(class_folders))
        else:
            log(f"The validation images in {val_dir} are not sorted into class folders yet: put "
                f"{devkit_archive.name} (or {KAGGLE_LABELS}) in {dataset_folder} and run again.")
            return
        log(f"Sorted {sort_val(val_dir, labels, progress, set(class_folders))} validation images into class folders "
            f"in {val_dir}")


def val_hint(dataset_folder, image_dir):
    """Advice for ``--check`` when validation images still lie flat."""
    flat = unsorted_val_images(os.path.join(image_dir, "val"))
    if flat:
        return (f"{len(flat)} validation images lie directly in {os.path.join(image_dir, 'val')}, not in class "
                "folders: run python -m datasets.prepare imagenet to sort them.")
    return None
