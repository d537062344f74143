from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class EuroSAT(BenchmarkDataset):
    dataset_dir = "eurosat"
    image_dir = "2750"
    split_file = "split_zhou_EuroSAT.json"
    split_file_id = "1Ip7yaCWFi0eaOFUGga0lUdVi_DDQth1o"
    template = "a centered satellite photo of {}."
