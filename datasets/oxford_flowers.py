from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class OxfordFlowers(BenchmarkDataset):
    dataset_dir = "oxford_flowers"
    image_dir = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    split_file_id = "1Pp0sRXzZFZq15zVOzKjKBu4A9i01nozT"
    template = "a photo of a {}, a type of flower."
