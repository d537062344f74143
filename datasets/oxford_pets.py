from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset


@DATASET_REGISTRY.register()
class OxfordPets(BenchmarkDataset):
    dataset_dir = "oxford_pets"
    image_dir = "images"
    split_file = "split_zhou_OxfordPets.json"
    split_file_id = "1501r8Ber4nNKvmlFVQZ8SeUHTcdTTEqs"
    template = "a photo of a {}, a type of pet."
