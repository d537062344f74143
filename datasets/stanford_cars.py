from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class StanfordCars(BenchmarkDataset):
    dataset_dir = "stanford_cars"
    image_dir = ""  # the split file's paths start at the dataset folder
    split_file = "split_zhou_StanfordCars.json"
    split_file_id = "1ObCFbaAgVu0I-k_Au-gIUcefirdAuizT"
    template = "a photo of a {}."
