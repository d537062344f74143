"""The datasets. ``register_with_dassl()`` (called by ``train.py``) imports every dataset module, registering it
with Dassl; ``splits``, ``limits``, ``world`` and ``prepare`` need no Dassl. This package never imports ``trainers``."""
import importlib
import pkgutil

from common.dassl_env import import_dassl

# Modules of this package that are not Dassl datasets.
NOT_DATASETS = {"splits", "benchmark", "world", "prepare", "limits"}


def register_with_dassl():
    import_dassl()
    for module in pkgutil.iter_modules(__path__):
        if module.name not in NOT_DATASETS:
            importlib.import_module(f"{__name__}.{module.name}")
