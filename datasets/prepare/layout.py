"""Which dataset is which, and whether a prepared dataset is complete, judged by the dataset modules' own readers
(``list_items`` of ``datasets/<name>.py``: the same code that training uses), so the check cannot drift from what
training expects."""
import glob
import os
from dataclasses import dataclass

import yaml

from ..splits import DatasetLayoutError, check_images_exist
from .sources import COOP, GDRIVE, Download

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_DIR = os.path.join(REPO, "configs", "datasets")


def dataset_classes(include_generated=False):
    """``{config name: dataset class}`` for every ``configs/datasets/<name>.yaml`` of a dataset that comes from
    elsewhere (the generated embedded-world datasets have nothing to download or prepare)."""
    import datasets

    # The registry is lazy: this entry point (``python -m datasets.prepare``) registers the modules itself rather
    # than trusting a caller to have done it.
    datasets.register_with_dassl()
    from dassl.data.datasets import DATASET_REGISTRY

    classes = {}
    for path in sorted(glob.glob(os.path.join(CONFIG_DIR, "*.yaml"))):
        with open(path) as handle:
            config = yaml.safe_load(handle)
        cls = DATASET_REGISTRY.get(config["DATASET"]["NAME"])
        if include_generated or not getattr(cls, "generated", False):
            classes[os.path.splitext(os.path.basename(path))[0]] = cls
    return classes


def layout_attributes(cls):
    """The module attributes a ``Place`` target may name."""
    return {"image_dir": cls.image_dir, "dataset_dir": cls.dataset_dir}


def module_files(cls, root):
    """``[(Download, extra folders to look in)]`` for the files whose names and ids the module itself holds: the
    split file, and ``classnames.txt`` for ImageNet and its variants."""
    from ..imagenet import ImageNet
    from ..imagenet_variants import ImageNetVariant

    files = []
    if cls.split_file:
        origin = f"CoOp's split; Google Drive id from {COOP}, kept in {cls.__module__}.{cls.__name__}.split_file_id"
        files.append((Download(cls.split_file, (GDRIVE + cls.split_file_id,), origin, target=cls.split_file), ()))
    if issubclass(cls, (ImageNet, ImageNetVariant)):
        origin = f"CLIP's ImageNet class names as shared by {COOP}; id in datasets.imagenet.ImageNet"
        classnames = Download("classnames.txt", (GDRIVE + ImageNet.classnames_file_id,), origin,
                              target="classnames.txt")
        files.append((classnames, (os.path.join(root, ImageNet.dataset_dir),)))  # ImageNet's copy, if there
    return files


@dataclass
class LayoutReport:
    name: str
    status: str  # ok | missing (no dataset folder) | incomplete | broken
    found: int = None
    expected: int = None
    missing: str = ""  # short, for the table
    detail: str = ""  # the full message, with how to fix it

    @property
    def ok(self):
        return self.status == "ok"


def _short(text, folder, limit=60):
    text = text.replace(folder + os.sep, "").split(". ")[0].split("\n")[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_layout(name, cls, root, recipe, hints=()):
    """A ``LayoutReport`` for dataset ``name`` under ``root``; reads only what is on disk. ``hints``: functions
    ``(dataset folder, image folder) -> str or None`` adding advice to an incomplete report."""
    reader = cls.layout_at(root)
    folder = reader.dataset_dir
    known_total = recipe.expected_images
    if not os.path.isdir(folder):
        return LayoutReport(name, "missing", 0, known_total, f"folder {cls.dataset_dir}/",
                            f"{folder} does not exist: run python -m datasets.prepare {name} --root {root}")
    try:
        splits = reader.list_items()
    except (DatasetLayoutError, KeyError, ValueError, OSError) as err:
        status = "incomplete" if isinstance(err, FileNotFoundError) else "broken"
        message = str(err) if not isinstance(err, KeyError) else f"class folder {err} is not in classnames.txt"
        return LayoutReport(name, status, None, known_total, _short(message, folder), message)
    listed = list({item.impath: item for split in splits.values() if split for item in split}.values())
    found = sum(os.path.isfile(item.impath) for item in listed)
    expected = known_total if known_total is not None else len(listed)
    advice = [hint for hint in (hint(folder, reader.image_dir) for hint in hints) if hint]
    if found < len(listed):
        detail = f"{len(listed) - found} of the {len(listed)} images listed by {reader.items_source()} are missing"
        try:
            check_images_exist(listed, folder, reader.items_source())
        except DatasetLayoutError as err:
            detail = str(err)
        return LayoutReport(name, "incomplete", found, expected, f"{len(listed) - found} listed images",
                            "\n".join([detail] + advice))
    if found != expected:
        detail = (f"{found} images found in {reader.image_dir}, {expected} expected ({recipe.expected_origin}). "
                  f"Run python -m datasets.prepare {name} --root {root} to complete it.")
        return LayoutReport(name, "incomplete", found, expected, f"{abs(expected - found)} images",
                            "\n".join([detail] + advice))
    return LayoutReport(name, "ok", found, expected)


def format_table(reports):
    rows = [("dataset", "status", "images found / expected", "missing")]
    for report in reports:
        found = "?" if report.found is None else str(report.found)
        expected = "?" if report.expected is None else str(report.expected)
        rows.append((report.name, report.status, f"{found} / {expected}", report.missing or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    for report in reports:
        if report.status not in ("ok", "missing") and report.detail:
            lines.append(f"\n{report.name}: {report.detail}")
    absent = [report.name for report in reports if report.status == "missing"]
    if absent:
        lines.append(f"\nNot prepared yet: python -m datasets.prepare {' '.join(absent)} --root $DATA")
    return "\n".join(lines)
