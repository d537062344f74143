"""The configuration: Dassl's defaults, the project's own keys, and one node per trainer.

Each trainer module declares its node next to its code with ``@trainer_config("KEY")``; ``get_cfg_default``
collects every declared node, so there is no central list to extend when a trainer is added.
"""
import difflib
import math
import os

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
    # The embedded world's datasets: the seed their images are rendered with (the classes stay the same); another
    # seed measures how much a result depends on the draw of the images (scripts/suite.py --image-seed).
    cfg.DATASET.WORLD_IMAGE_SEED = 0
    # Validation-only model selection: fold k (1..VAL_FOLDS) splits the base classes into pseudo-base and pseudo-new
    # classes and evaluates on held-out training images (never a test image or a new class); 0 is off.
    cfg.DATASET.VAL_FOLD = 0
    cfg.DATASET.VAL_FOLDS = 2
    # Encode each distinct image once per run and reuse its features (trainers whose image encoder is CLIP's frozen,
    # unprompted one: CoOp, CoCoOp, KgCoOp, DualMIPrompt); exact, and most of a small CLIP's step time
    # when the same few-shot images come back every epoch. The world configs turn it on.
    cfg.MODEL.CACHE_IMAGE_FEATURES = False
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
    # A checkpoint every epoch (Dassl's default is the last epoch only), so a stopped run resumes where it was;
    # the toolbox's checkpoints hold only learned parameters, so this costs little.
    cfg.TRAIN.CHECKPOINT_FREQ = 1
    # How many epoch checkpoints a run keeps: the newest KEEP_CHECKPOINTS (0: every one); older ones are deleted once
    # a newer one is complete. The best-on-validation checkpoint (model-best.pth.tar) is always kept.
    cfg.TRAIN.KEEP_CHECKPOINTS = 2
    # Diagnosis on a validation fold: after every epoch, the accuracy on held-out images of the pseudo-base and the
    # pseudo-new classes and each half's cosine to its zero-shot weights (trainers/tracking.py; logged as
    # track_<half>_acc / track_<half>_cos). Training is unchanged.
    cfg.TRAIN.TRACK_NEW = False


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


BASE_KEY = "_BASE_"


def load_yaml_with_bases(path, _chain=()):
    """The contents of a config yaml as a dict, with its ``_BASE_`` chain applied: ``_BASE_: other.yaml`` (relative
    to this file's folder) is loaded first and this file's keys override it, nested nodes key by key."""
    import yaml

    path = os.path.abspath(path)
    if path in _chain:
        cycle = " -> ".join(os.path.relpath(p) for p in (*_chain, path))
        raise ConfigError(f"config {_chain[0]} inherits from itself through {BASE_KEY}: {cycle}")
    if not os.path.isfile(path):
        if _chain:
            raise ConfigError(f"{os.path.relpath(_chain[-1])} names {BASE_KEY} {os.path.relpath(path)}, which does not "
                              "exist (the base is found relative to the folder of the file that names it)")
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read config file {path}: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold KEY: value pairs, not a {type(data).__name__}")
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.endswith(".yaml"):
        raise ConfigError(f"{BASE_KEY} in {path} must be the name of a .yaml file; got {base!r}")
    merged = load_yaml_with_bases(os.path.join(os.path.dirname(path), base), (*_chain, path))
    _deep_update(merged, data)
    return merged


def _deep_update(base, changes):
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def merge_file(cfg, path):
    data = load_yaml_with_bases(path)
    _merge(cfg, lambda: cfg.merge_from_other_cfg(CN(data)), f"config file {path}")


def merge_overrides(cfg, opts):
    if len(opts) % 2:
        raise ConfigError(
            f"Overrides must come in KEY VALUE pairs; got an odd number of items: {' '.join(map(str, opts))}"
        )
    for key, value in zip(opts[0::2], opts[1::2]):
        _merge(cfg, lambda: cfg.merge_from_list([key, value]), f"override {key} {value}")


def _positive(value):
    return math.isfinite(value) and value > 0


def _pair_of_positive_ints(value):
    return len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)


# CLIP's text encoder reads 77 tokens: a learned-context prompt is [SOS], the context, the class name (one token at
# least), "." and [EOS], so at most 73 context tokens fit (fewer for longer class names, checked when the prompts
# are built).
CLIP_CONTEXT_LENGTH = 77
MAX_N_CTX = CLIP_CONTEXT_LENGTH - 4
_N_CTX_RANGE = (f"a number of context tokens from 1 to {MAX_N_CTX} (CLIP's {CLIP_CONTEXT_LENGTH}-token text context "
                "also holds [SOS], the class name, '.' and [EOS])")
MAX_SEED = 2**32 - 1  # numpy's limit


def _n_ctx(value):
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_N_CTX


# (key, check, what a valid value is). Keys ending in ".*" apply to that key in every trainer's node.
VALUE_RULES = (
    ("OPTIM.LR", _positive, "a positive finite number"),
    ("OPTIM.MAX_EPOCH", _positive, "a positive number of epochs"),
    ("OPTIM.WEIGHT_DECAY", lambda v: math.isfinite(v) and v >= 0, "a finite number, zero or positive"),
    ("OPTIM.MOMENTUM", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("OPTIM.WARMUP_EPOCH", lambda v: isinstance(v, int) and not isinstance(v, bool),
     "a whole number of epochs (0 or negative: no warm-up)"),
    ("OPTIM.WARMUP_TYPE", lambda v: v in ("constant", "linear"), "constant or linear"),
    ("OPTIM.LR_SCHEDULER", lambda v: v in ("single_step", "multi_step", "cosine"), "single_step, multi_step or cosine"),
    ("OPTIM.NAME", lambda v: v in ("adam", "amsgrad", "sgd", "rmsprop", "radam", "adamw"),
     "adam, amsgrad, sgd, rmsprop, radam or adamw"),
    ("DATALOADER.TRAIN_X.BATCH_SIZE", _positive, "a positive batch size"),
    ("DATALOADER.TEST.BATCH_SIZE", _positive, "a positive batch size"),
    ("DATALOADER.NUM_WORKERS", lambda v: v >= 0, "zero or a positive number of worker processes"),
    ("DATASET.NUM_SHOTS", lambda v: v >= -1, "-1 or 0 (all images) or a positive number of shots"),
    ("DATASET.SUBSAMPLE_CLASSES", lambda v: v in ("all", "base", "new"), "all, base or new"),
    ("DATASET.VAL_FOLD", lambda v: isinstance(v, int) and v >= 0, "0 (off) or a fold number from 1"),
    ("DATASET.VAL_FOLDS", lambda v: isinstance(v, int) and v >= 2, "an integer, 2 or more"),
    ("DATASET.WORLD_IMAGE_SEED", lambda v: isinstance(v, int) and 0 <= v < 2**32, "an integer in [0, 2**32)"),
    ("INPUT.SIZE", _pair_of_positive_ints, "a pair of positive integers, e.g. (224, 224)"),
    ("TRAIN.CHECKPOINT_FREQ", lambda v: v >= 0, "zero (last epoch only) or a positive number of epochs"),
    ("TRAIN.KEEP_CHECKPOINTS", lambda v: isinstance(v, int) and v >= 0, "0 (keep all) or a positive number of checkpoints"),
    ("TRAIN.PRINT_FREQ", _positive, "a positive number of batches"),
    ("TRAINER.*.PREC", lambda v: v in ("fp16", "fp32", "amp", "bf16"), "fp16, fp32, amp or bf16"),
    ("SEED", lambda v: isinstance(v, int) and not isinstance(v, bool) and v <= MAX_SEED,
     f"an integer from 0 to 2**32 - 1 = {MAX_SEED} (--seed), or negative for an unseeded run"),
    ("TRAINER.*.N_CTX", _n_ctx, _N_CTX_RANGE),
    ("TRAINER.*.N_CTX_TEXT", _n_ctx, _N_CTX_RANGE),
    ("TRAINER.*.CLASS_TOKEN_POSITION", lambda v: v in ("end", "middle", "front"), "end, middle or front"),
    ("TRAINER.*.TEMPLATES", lambda v: v in ("dataset", "ensemble"), "dataset or ensemble"),
)


def _lookup(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def validate_cfg(cfg, training=True):
    """Values of the right type but out of range, named with the key and what is expected; with ``training``, also
    a warm-up that would last the whole run (an evaluation does not use the schedule)."""
    for key, check, expected in VALUE_RULES:
        if key.startswith("TRAINER.*."):
            leaf = key[len("TRAINER.*."):]
            keys = [f"TRAINER.{name}.{leaf}" for name, node in cfg.TRAINER.items()
                    if isinstance(node, CN) and leaf in node]
        else:
            keys = [key]
        for full_key in keys:
            value = _lookup(cfg, full_key)
            try:
                valid = check(value)
            except TypeError:
                valid = False
            if not valid:
                raise ConfigError(f"{full_key} is {value!r}; it must be {expected}.")
    if training:
        _check_warmup(cfg.OPTIM)


def _check_warmup(optim):
    """A warm-up as long as the run (or longer) would train every epoch at the warm-up learning rate."""
    warmup, epochs = optim.WARMUP_EPOCH, optim.MAX_EPOCH
    if warmup > 0 and warmup >= epochs:
        raise ConfigError(
            f"OPTIM.WARMUP_EPOCH is {warmup} and OPTIM.MAX_EPOCH is {epochs}: every epoch would train at the warm-up "
            "learning rate. Set OPTIM.WARMUP_EPOCH 0 (no warm-up) or below OPTIM.MAX_EPOCH."
        )


# Paths that say where a run reads and writes, not what it computes: left out of the config's fingerprint.
LOCATION_KEYS = ("OUTPUT_DIR", "RESUME", "DATASET.ROOT", "MODEL.BACKBONE.CACHE_DIR")


def config_fingerprint(cfg):
    """SHA-256 of the config without its location keys: equal for two runs that compute the same thing."""
    import hashlib

    clone = cfg.clone()
    clone.defrost()
    for key in LOCATION_KEYS:
        node, _, leaf = key.rpartition(".")
        (_lookup(clone, node) if node else clone)[leaf] = ""
    return hashlib.sha256(clone.dump().encode()).hexdigest()


RESOLVED_CONFIG = "config.yaml"


def write_resolved_config(cfg):
    """Write the run's fully resolved config to ``<OUTPUT_DIR>/config.yaml`` (loadable with ``--config-file``), so
    that two runs can be diffed. A different one already there (an earlier run into the same folder) is kept as
    ``config-<n>.yaml``, never overwritten."""
    from common.fileio import atomic_open

    path = os.path.join(cfg.OUTPUT_DIR, RESOLVED_CONFIG)
    text = cfg.dump()
    if os.path.isfile(path):
        with open(path) as handle:
            if handle.read() == text:
                return path
        n = 1
        while os.path.exists(os.path.join(cfg.OUTPUT_DIR, f"config-{n}.yaml")):
            n += 1
        os.replace(path, os.path.join(cfg.OUTPUT_DIR, f"config-{n}.yaml"))
        print(f"The config differs from the earlier run's in {cfg.OUTPUT_DIR}: that one is kept as config-{n}.yaml")
    os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
    with atomic_open(path) as handle:
        handle.write(text)
    return path
