"""The test-only ImageNet variants used for domain generalisation. Each folder holds ``classnames.txt`` (a copy of
ImageNet's) and one sub-folder per class; ImageNet-A and -R cover 200 of the 1,000 classes."""
import os

from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset
from .splits import Item


class ImageNetVariant(BenchmarkDataset):
    test_only = True

    def class_folders(self, names):
        """``[(folder, class name)]`` in label order."""
        folders = [name for name in self.list_images(self.image_dir) if os.path.isdir(os.path.join(self.image_dir, name))]
        return [(folder, names[folder]) for folder in folders]

    def list_items(self):
        names = self.read_classnames(self.require(os.path.join(self.dataset_dir, "classnames.txt"), "classnames.txt"))
        self.require(self.image_dir, "Image folder")
        items = []
        for label, (folder, classname) in enumerate(self.class_folders(names)):
            folder_path = os.path.join(self.image_dir, folder)
            items.extend(Item(os.path.join(folder_path, name), label, classname) for name in self.list_images(folder_path))
        return {"train": items, "val": None, "test": items}

    def read_items(self):
        return self.list_items()  # listed from the folders themselves: every item exists


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetVariant):
    dataset_dir = "imagenetv2"
    image_dir = "imagenetv2-matched-frequency-format-val"

    def class_folders(self, names):
        # Folders are named 0..999 after the label; the class name is the label-th line of classnames.txt.
        return [(str(label), classname) for label, classname in enumerate(names.values())]


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetVariant):
    dataset_dir = "imagenet-sketch"
    image_dir = "images"


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetVariant):
    dataset_dir = "imagenet-adversarial"
    image_dir = "imagenet-a"


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetVariant):
    dataset_dir = "imagenet-rendition"
    image_dir = "imagenet-r"
