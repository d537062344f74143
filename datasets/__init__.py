"""Importing this package registers every dataset with Dassl (``splits`` alone needs no Dassl)."""
import importlib.util
import os

if importlib.util.find_spec("dassl") is not None:
    # Dassl imports wilds, whose version check starts a network thread at import; skip it (this package is also
    # an entry point: python -m datasets.prepare).
    os.environ.setdefault("OUTDATED_IGNORE", "1")
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
    )
