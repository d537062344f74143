"""The configuration: Dassl's defaults, the project's own keys, and one node per trainer.

Each trainer module declares its node next to its code with ``@trainer_config("KEY")``; ``get_cfg_default``
collects every declared node, so there is no central list to extend when a trainer is added.
"""
import difflib

from yacs.config import CfgNode as CN

_TRAINER_NODES = {}


def trainer_config(key):
    """Declare ``cfg.TRAINER.<key>``: decorate a function that returns the node with its defaults."""

    def register(build_node):
        if key in _TRAINER_NODES and _TRAINER_NODES[key] is not build_node:
            raise ValueError(f"cfg.TRAINER.{key} is declared twice")
        _TRAINER_NODES[key] = build_node
        return build_node

    return register


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message names the key and the fix."""


def add_project_keys(cfg):
    # Base-to-new protocol: which half of the classes to keep ("all", "base" or "new").
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    # A local CLIP weights file (.pt JIT archive or state dict) used instead of the named download.
    cfg.MODEL.BACKBONE.PATH = ""
    # Where named CLIP weights are downloaded to (and looked for).
    cfg.MODEL.BACKBONE.CACHE_DIR = "~/.cache/clip"
    # The trainer config file's name (e.g. "vit_b16_ctxv1"), set by train.py for the results record.
    cfg.CONFIG_NAME = ""
    # The evaluation protocol a protocol script ran this under (base2new, xd, fewshot; empty for a hand-made run),
    # copied into the results record so that the tables tool needs no folder names.
    cfg.PROTOCOL = ""
    # Stop with a clear error when the loss becomes NaN or infinite.
    cfg.TRAIN.STOP_ON_NAN = True


def get_cfg_default():
    from dassl.config import get_cfg_default as dassl_defaults

    cfg = dassl_defaults()
    add_project_keys(cfg)
    for key, build_node in sorted(_TRAINER_NODES.items()):
        cfg.TRAINER[key] = build_node()
    return cfg


def _all_keys(node, prefix=""):
    for name, value in node.items():
        full = f"{prefix}{name}"
        if isinstance(value, CN):
            yield from _all_keys(value, full + ".")
        else:
            yield full


def explain_bad_key(cfg, key, origin):
    close = difflib.get_close_matches(key, list(_all_keys(cfg)), n=3, cutoff=0.6)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return ConfigError(f"Unknown config key {key} ({origin}).{hint}")


def _merge(cfg, apply, origin):
    try:
        apply()
    except (KeyError, AssertionError) as err:
        message = str(err).strip("'\"")
        for prefix in ("Non-existent config key: ", "Non-existent key: "):
            if message.startswith(prefix):
                raise explain_bad_key(cfg, message[len(prefix):], origin) from None
        raise ConfigError(f"Cannot apply {origin}: {message}") from None
    except ValueError as err:
        # yacs: "Type mismatch (<class 'int'> vs. <class 'str'>) with values (16 vs. abc) for config key: X"
        raise ConfigError(f"Cannot apply {origin}: {err}") from None


def merge_file(cfg, path):
    _merge(cfg, lambda: cfg.merge_from_file(path), f"config file {path}")


def merge_overrides(cfg, opts):
    if len(opts) % 2:
        raise ConfigError(
            f"Overrides must come in KEY VALUE pairs; got an odd number of items: {' '.join(map(str, opts))}"
        )
    for key, value in zip(opts[0::2], opts[1::2]):
        _merge(cfg, lambda: cfg.merge_from_list([key, value]), f"override {key} {value}")
