import os

from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset
from .splits import Item


@DATASET_REGISTRY.register()
class ImageNet(BenchmarkDataset):
    """``images/train/<wnid>/`` and ``images/val/<wnid>/`` with ``classnames.txt``; labels follow the sorted
    folder names and the validation set is the test set (as in CoOp). Files are read in sorted order, so the
    few-shot selection does not depend on the file system's listing order."""

    dataset_dir = "imagenet"
    image_dir = "images"
    classnames_file_id = "1-61f_ol79pViBFDG_IDlUQSwoLcn2XXF"
    ensemble_adds_template = False
    val_is_test = True

    def folder_classnames(self):
        path = os.path.join(self.dataset_dir, "classnames.txt")
        if not os.path.isfile(path):
            self.require(path, f"classnames.txt (Google Drive file id {self.classnames_file_id}, from CoOp's DATASETS.md)")
        return self.read_classnames(path)

    def list_items(self):
        names = self.folder_classnames()
        return {"train": self.read_folders("train", names), "val": None, "test": self.read_folders("val", names)}

    def read_items(self):
        return self.list_items()  # listed from the folders themselves: every item exists

    def read_folders(self, split, names):
        split_dir = self.require(os.path.join(self.image_dir, split), "Image folder")
        # Hidden folders (e.g. a class being extracted by datasets/prepare) are not classes.
        folders = sorted(entry.name for entry in os.scandir(split_dir)
                         if entry.is_dir() and not entry.name.startswith("."))
        items = []
        for label, folder in enumerate(folders):
            for name in self.list_images(os.path.join(split_dir, folder)):
                items.append(Item(os.path.join(split_dir, folder, name), label, names[folder]))
        return items
