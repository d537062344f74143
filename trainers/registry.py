"""What the rest of the project knows about each trainer, declared next to the trainer's own code.

Each trainer's model module (``trainers/<name>_model.py``, pure torch, no Dassl) ends with one ``declare(...)``
call: the trainer's Dassl name, the module holding its Dassl adapter, its default config per protocol and dataset,
whether it learns, how the benchmark builds its model, and where it sits in the tables. The protocol scripts
(``python3 -m trainers.registry config ...``), ``train.py``, the tables, the suite, the sweep and the benchmark read
this registry and nothing else, so adding a trainer touches no central list (docs/contributing.md).

Trainers that live outside this repository are found through ``TRAINER_PLUGINS``: a comma-separated list of
importable module names whose import declares them.
"""
import argparse
import importlib
import os
import pkgutil
import sys
from dataclasses import dataclass
from typing import Callable, Optional

PROTOCOLS = ("base2new", "xd", "dg", "fewshot")
PLUGINS_VARIABLE = "TRAINER_PLUGINS"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_ROOT = os.path.join("configs", "trainers")


class RegistryError(ValueError):
    pass


@dataclass(frozen=True)
class TrainerSpec:
    name: str  # the trainer's name for Dassl and --trainer; its configs are in configs/trainers/<config_folder>/
    adapter: str  # the module whose import registers the Dassl trainer (imported by train.py only)
    # (protocol, training dataset, shots) -> the config name (no .yaml) used on a real dataset when none is given
    default_config: Callable[[str, str, int], str]
    order: int  # position in tables and listings (smaller first)
    learns: bool = True  # False: only evaluated (zero-shot); its protocol scripts skip training
    benchmark_model: Optional[Callable] = None  # (frozen CLIP, class names) -> model with default settings
    world_config: str = "world"  # the config for the embedded world datasets ("": none)
    in_suite: bool = True  # compared by scripts/suite.py by default
    display: str = ""  # label in tables (default: the name)
    config_folder: str = ""  # default: the name

    @property
    def label(self):
        return self.display or self.name

    @property
    def folder(self):
        return self.config_folder or self.name

    def config_name(self, protocol, dataset, shots=16):
        if protocol not in PROTOCOLS:
            raise RegistryError(f"unknown protocol {protocol!r}: choose from {', '.join(PROTOCOLS)}")
        if is_world_dataset(dataset) and self.world_config:
            return self.world_config
        return self.default_config(protocol, dataset, int(shots))

    def config_path(self, name):
        """The yaml of config ``name`` in this trainer's folder, relative to the repository root."""
        path = os.path.join(CONFIG_ROOT, self.folder, name + ".yaml")
        if not os.path.isfile(os.path.join(REPO, path)):
            raise RegistryError(f"no config {path} (trainer {self.name!r}, config {name!r}); the configs of "
                                f"{self.name}: {', '.join(config_names(self)) or 'none'}")
        return path


_SPECS = {}
_loaded = False


def declare(**fields):
    """Declare a trainer (called at the end of its model module); declaring one name twice is an error."""
    spec = TrainerSpec(**fields)
    if spec.name in _SPECS and _SPECS[spec.name] != spec:
        raise RegistryError(f"trainer {spec.name!r} is declared twice")
    _SPECS[spec.name] = spec
    return spec


def forget(name):
    """Remove a declaration (for tests that declare a throwaway trainer)."""
    _SPECS.pop(name, None)


def is_world_dataset(dataset):
    return dataset == "world" or dataset.startswith("world_")


def load():
    """Import every module that declares trainers: this package's ``*_model`` modules and ``TRAINER_PLUGINS``."""
    global _loaded
    if not _loaded:
        for module in pkgutil.iter_modules([os.path.dirname(os.path.abspath(__file__))]):
            if module.name.endswith("_model"):
                importlib.import_module(f"{__package__}.{module.name}")
        _loaded = True
    for name in filter(None, (part.strip() for part in os.environ.get(PLUGINS_VARIABLE, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise RegistryError(f"{PLUGINS_VARIABLE} names {name!r}, which cannot be imported ({err}); "
                                "put its folder on PYTHONPATH") from None


def specs():
    """Every declared trainer, in table order."""
    load()
    return sorted(_SPECS.values(), key=lambda spec: (spec.order, spec.name))


def get(name):
    load()
    if name not in _SPECS:
        raise RegistryError(f"unknown trainer {name!r}: choose from {', '.join(s.name for s in specs())}")
    return _SPECS[name]


def names():
    return [spec.name for spec in specs()]


def order_key(name):
    """Sort key for a trainer name in tables; trainers nobody declared come last, by name."""
    load()
    spec = _SPECS.get(name)
    return (0, spec.order, name) if spec else (1, 0, name)


def label(name):
    load()
    spec = _SPECS.get(name)
    return spec.label if spec else name


def config_names(spec):
    folder = os.path.join(REPO, CONFIG_ROOT, spec.folder)
    if not os.path.isdir(folder):
        return []
    return sorted(name[:-5] for name in os.listdir(folder) if name.endswith(".yaml"))


def register_with_dassl():
    """Import every declared trainer's Dassl adapter (registering it with Dassl's TRAINER_REGISTRY)."""
    from common.dassl_env import import_dassl

    import_dassl()
    for spec in specs():
        importlib.import_module(spec.adapter)


def main(argv=None):
    """The protocol scripts' questions, answered on stdout (errors: one line on stderr, exit 2)."""
    parser = argparse.ArgumentParser(prog="python3 -m trainers.registry")
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("config", help="the config a run uses: its name, its yaml path, and learns or evaluates")
    config.add_argument("trainer")
    config.add_argument("protocol", choices=PROTOCOLS)
    config.add_argument("dataset")
    config.add_argument("--shots", type=int, default=16)
    config.add_argument("--name", default="", help="the config name the user gave (checked, not chosen)")
    learns = commands.add_parser("learns", help="exit 0 when the trainer learns, 1 when it is only evaluated")
    learns.add_argument("trainer")
    commands.add_parser("list", help="the declared trainers, in table order")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print("\n".join(names()))
            return 0
        spec = get(args.trainer)
        if args.command == "learns":
            return 0 if spec.learns else 1
        name = args.name or spec.config_name(args.protocol, args.dataset, args.shots)
        print(name, spec.config_path(name), "learns" if spec.learns else "evaluates")
        return 0
    except RegistryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    # Run as ``-m``, this file is ``__main__``; the declarations go to ``trainers.registry``, so ask that module.
    from trainers.registry import main as registry_main

    sys.exit(registry_main())
