from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class UCF101(BenchmarkDataset):
    dataset_dir = "ucf101"
    image_dir = "UCF-101-midframes"
    split_file = "split_zhou_UCF101.json"
    split_file_id = "1I0S0q91hJfsV9Gf4xDIjgDq4AqBNJb1y"
    template = "a photo of a person doing {}."
