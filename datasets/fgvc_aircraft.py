import os

from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset
from .splits import Item


@DATASET_REGISTRY.register()
class FGVCAircraft(BenchmarkDataset):
    """Splits come from the dataset's own annotation files (``images_variant_<split>.txt``), as in CoOp."""

    dataset_dir = "fgvc_aircraft"
    image_dir = "images"
    template = "a photo of a {}, a type of aircraft."

    def items_source(self):
        return os.path.join(self.dataset_dir, "images_variant_{train,val,test}.txt")

    def list_items(self):
        variants_file = self.require(os.path.join(self.dataset_dir, "variants.txt"), "Class list")
        with open(variants_file) as handle:
            classnames = [line.strip() for line in handle if line.strip()]
        label_of = {name: label for label, name in enumerate(classnames)}
        splits = {}
        for split in ("train", "val", "test"):
            path = self.require(os.path.join(self.dataset_dir, f"images_variant_{split}.txt"), "Annotation file")
            items = []
            with open(path) as handle:
                for line in handle:
                    if line.strip():
                        image_id, _, classname = line.strip().partition(" ")
                        items.append(Item(os.path.join(self.image_dir, image_id + ".jpg"), label_of[classname], classname))
            splits[split] = items
        return splits
