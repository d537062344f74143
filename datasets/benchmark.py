"""The dataset base: where the dataset lives under ``$DATA``, how its items are read, and the shared few-shot and
base/new logic of ``splits.py`` applied in one place. A dataset module only says what is specific to it."""
import os

from common.dassl_env import import_dassl

import_dassl()  # every Dassl dataset imports this module: Dassl without its import side effects

from dassl.data.datasets import DatasetBase, Datum  # noqa: E402

from .splits import (  # noqa: E402
    FEWSHOT_RULE,
    DatasetLayoutError,
    check_images_exist,
    fewshot_splits,
    file_sha256,
    load_or_build_fewshot,
    read_split_file,
    subsample_classes,
    validation_task,
)

DATASETS_DOC = "docs/datasets.md"


def data_root(cfg):
    root = cfg.DATASET.ROOT
    if not root:
        raise DatasetLayoutError("No dataset root given: pass --root /path/to/data (the scripts use $DATA).")
    root = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(root):
        raise DatasetLayoutError(
            f"The dataset root {root} does not exist. Set DATA (or --root) to the folder that holds the datasets."
        )
    return root


class BenchmarkDataset(DatasetBase):
    """Subclasses set ``dataset_dir`` (folder under the root), ``image_dir`` (inside it) and either
    ``split_file`` (CoOp's split JSON, with ``split_file_id`` its public file id) or their own ``read_items``."""

    dataset_dir = ""
    image_dir = ""
    split_file = ""
    split_file_id = ""
    template = "a photo of a {}."
    ensemble_adds_template = True
    ensemble_templates = ()  # the dataset's own template ensemble; empty: CLIP's (trainers/templates.py)
    test_only = False
    val_is_test = False  # ImageNet: no separate validation set
    generated = False  # made by the toolbox itself on first use (the embedded world): nothing to download

    def __init__(self, cfg):
        root = data_root(cfg)
        self.bind_root(root)
        if not os.path.isdir(self.dataset_dir):
            raise DatasetLayoutError(
                f"Dataset folder {self.dataset_dir} is missing. Put {type(self).__name__} there (python -m "
                f"datasets.prepare {type(self).__name__} --root {root} does it; see {DATASETS_DOC}), or point "
                "DATA / --root at the folder that holds it."
            )
        splits = self.read_items()
        train, val, test = splits["train"], splits.get("val"), splits["test"]
        if self.test_only:
            train, val = test, None
        num_shots = cfg.DATASET.NUM_SHOTS
        full_train, full_val = train, val
        if num_shots >= 1 and not self.test_only:
            train, val = self.fewshot(train, val, num_shots, cfg.SEED)
        if self.val_is_test:
            val = test
        if cfg.DATASET.VAL_FOLD:
            if self.test_only or self.val_is_test:
                raise DatasetLayoutError(f"DATASET.VAL_FOLD: {type(self).__name__} has no held-out training images to "
                                         "validate on (test-only dataset, or its validation split is its test split).")
            try:
                train, val, test = validation_task(full_train, full_val, train, cfg.DATASET.SUBSAMPLE_CLASSES,
                                                   cfg.DATASET.VAL_FOLD, cfg.DATASET.VAL_FOLDS)
            except ValueError as err:
                raise DatasetLayoutError(str(err)) from None
        else:
            train, val, test = subsample_classes(train, val, test, subsample=cfg.DATASET.SUBSAMPLE_CLASSES)
        super().__init__(train_x=to_datums(train), val=to_datums(val) if val else None, test=to_datums(test))

    def bind_root(self, root):
        """Point the instance's ``dataset_dir`` and ``image_dir`` at the dataset under ``root``."""
        self.dataset_dir = os.path.join(root, type(self).dataset_dir)
        self.image_dir = os.path.join(self.dataset_dir, type(self).image_dir)

    @classmethod
    def layout_at(cls, root):
        """An instance bound to ``root`` that has read nothing: tools that inspect a dataset's layout without
        building it (``datasets/prepare``) call its ``list_items`` / ``read_items``."""
        reader = cls.__new__(cls)
        reader.bind_root(root)
        return reader

    # ----- reading -----
    def list_items(self):
        """``{"train": [Item], "val": [Item] or None, "test": [Item]}`` as the dataset lists them (by default its
        split file), without checking that the image files exist."""
        return read_split_file(self.split_path(), self.image_dir, self.test_only)

    def items_source(self):
        """What lists the items, for error messages."""
        return self.split_path()

    def read_items(self):
        """``list_items()``, after checking that every listed image exists."""
        splits = self.list_items()
        listed = [item for split in splits.values() if split for item in split]
        check_images_exist(listed, self.dataset_dir, self.items_source())
        return splits

    def split_path(self):
        path = os.path.join(self.dataset_dir, self.split_file)
        if not os.path.isfile(path):
            source = f" (Google Drive file id {self.split_file_id}, linked from CoOp's DATASETS.md)" if self.split_file_id else ""
            raise DatasetLayoutError(
                f"Split file {path} is missing. It is CoOp's official split {self.split_file}{source}: "
                f"download it into {self.dataset_dir} (python -m datasets.prepare {type(self).__name__} does it; "
                f"see {DATASETS_DOC})."
            )
        return path

    def require(self, path, what):
        if not os.path.exists(path):
            raise DatasetLayoutError(f"{what} {path} is missing (see {DATASETS_DOC}).")
        return path

    # ----- few-shot -----
    def fewshot_source_key(self):
        """What the full item lists come from, so a cache made from another source is not reused."""
        return file_sha256(self.split_path()) if self.split_file else "folders"

    def fewshot(self, train, val, num_shots, seed):
        def build():
            return fewshot_splits(train, val, num_shots, seed)

        if seed < 0:  # an unseeded run samples afresh and caches nothing
            return build()
        key = {"rule": FEWSHOT_RULE, "shots": num_shots, "seed": seed, "source": self.fewshot_source_key(),
               "val": val is not None}
        cache = os.path.join(self.dataset_dir, "split_fewshot", f"shot_{num_shots}-seed_{seed}.json")
        return load_or_build_fewshot(cache, key, self.dataset_dir, build)

    # ----- folder-per-class layouts (ImageNet and its variants) -----
    @staticmethod
    def read_classnames(path):
        """``{folder: class name}`` from a ``classnames.txt`` of lines ``<folder> <class name>``."""
        names = {}
        with open(path) as handle:
            for line in handle:
                if line.strip():
                    folder, _, name = line.strip().partition(" ")
                    names[folder] = name
        return names

    @staticmethod
    def list_images(folder):
        return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def to_datums(items):
    return [Datum(impath=item.impath, label=item.label, classname=item.classname) for item in items]
