from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class Caltech101(BenchmarkDataset):
    dataset_dir = "caltech-101"
    image_dir = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    split_file_id = "1hyarUivQE36mY6jSomru6Fjd-JzwcCzN"
    template = "a photo of a {}."
