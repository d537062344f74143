"""Importing this package registers every dataset with Dassl (``splits`` alone needs no Dassl)."""
import importlib.util

if importlib.util.find_spec("dassl") is not None:
    # First: importing trainers neutralises the side effects of importing Dassl (this package is also an entry
    # point of its own: python -m datasets.prepare).
    import trainers  # noqa: F401

    from . import (  # noqa: F401
        caltech101,
        dtd,
        eurosat,
        fgvc_aircraft,
        food101,
        imagenet,
        imagenet_variants,
        oxford_flowers,
        oxford_pets,
        stanford_cars,
        sun397,
        ucf101,
        world_datasets,
    )
