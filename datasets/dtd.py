from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class DescribableTextures(BenchmarkDataset):
    dataset_dir = "dtd"
    image_dir = "images"
    split_file = "split_zhou_DescribableTextures.json"
    split_file_id = "1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x"
    template = "{} texture."
