"""The embedded benchmark's datasets: procedurally generated (``datasets/world``), written under ``$DATA`` in
CoOp's layout the first time they are used, then read like any other dataset."""
import os

from dassl.data.datasets import DATASET_REGISTRY

from .benchmark import BenchmarkDataset
from .splits import DatasetLayoutError
from .world import catalog


class WorldDataset(BenchmarkDataset):
    """A dataset of the procedural world; ``world_name`` is its name in ``datasets/world/catalog.py``."""

    world_name = ""
    generated = True
    image_dir = catalog.IMAGE_DIR
    split_file = catalog.SPLIT_FILE
    image_seed = catalog.WORLD_SEED  # set from DATASET.WORLD_IMAGE_SEED; a layout_at reader keeps the default

    def __init__(self, cfg):
        self.image_seed = cfg.DATASET.WORLD_IMAGE_SEED
        if cfg.DATASET.ROOT:  # without a root the base class says what to do
            root = os.path.abspath(os.path.expanduser(cfg.DATASET.ROOT))
            try:
                catalog.ensure_dataset(root, self.world_name, self.image_seed)
            except catalog.WorldDataError as err:
                raise DatasetLayoutError(str(err)) from None
        super().__init__(cfg)

    def bind_root(self, root):
        """The folder of this dataset rendered with the configured image seed (``DATASET.WORLD_IMAGE_SEED``)."""
        self.dataset_dir = os.path.join(root, catalog.folder_name(self.world_name, self.image_seed))
        self.image_dir = os.path.join(self.dataset_dir, type(self).image_dir)


def _register(name, class_name):
    spec = catalog.get_spec(name)
    attributes = {"world_name": name, "dataset_dir": spec.name, "template": spec.template,
                  "ensemble_templates": spec.ensemble,
                  "test_only": spec.test_only, "__module__": __name__,
                  "__doc__": f"The embedded world dataset ``{name}`` ({spec.kind}, {spec.style} style)."}
    cls = type(class_name, (WorldDataset,), attributes)
    DATASET_REGISTRY.register(cls)
    return cls


# Dassl's DATASET.NAME for each world dataset (configs/datasets/<name>.yaml).
DASSL_NAMES = {
    "world": "World",
    "world_shapes": "WorldShapes",
    "world_textures": "WorldTextures",
    "world_counts": "WorldCounts",
    "world_signs": "WorldSigns",
    "world_sketch": "WorldSketch",
    "world_mosaic": "WorldMosaic",
    "world_neon": "WorldNeon",
}

assert set(DASSL_NAMES) == set(catalog.CATALOG), "every world dataset needs a Dassl name"
for _name, _class_name in DASSL_NAMES.items():
    globals()[_class_name] = _register(_name, _class_name)
