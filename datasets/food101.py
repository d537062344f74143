from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class Food101(BenchmarkDataset):
    dataset_dir = "food-101"
    image_dir = "images"
    split_file = "split_zhou_Food101.json"
    split_file_id = "1QK0tGi096I0Ba6kggatX1ee6dJFIcEJl"
    template = "a photo of {}, a type of food."
