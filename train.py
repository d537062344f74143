"""Train or evaluate a prompt-learning method on CLIP with Dassl; the command line is CoOp's.

Config layers, each overriding the one before: Dassl's and the trainers' defaults, the dataset yaml, the trainer
yaml, the command-line options, and trailing ``KEY VALUE`` overrides.
"""
import argparse
import difflib
import os
import re
import sys

from common import runlock
from common.dassl_env import import_dassl
from common.fileio import WriteError

import_dassl()  # first: Dassl without its import side effects

import torch  # noqa: E402

import datasets  # noqa: E402
from trainers import registry  # noqa: E402

registry.register_with_dassl()
datasets.register_with_dassl()

from dassl.data.datasets import DATASET_REGISTRY  # noqa: E402
from dassl.engine import TRAINER_REGISTRY, build_trainer  # noqa: E402
from dassl.utils import collect_env_info, set_random_seed, setup_logger  # noqa: E402

from datasets.splits import DatasetLayoutError  # noqa: E402
from trainers.base import CheckpointError, ImageReadError  # noqa: E402
from trainers.clip_loader import ClipWeightsError  # noqa: E402
from trainers.config import (  # noqa: E402
    ConfigError,
    get_cfg_default,
    merge_file,
    merge_overrides,
    validate_cfg,
    write_resolved_config,
)

USER_ERRORS = (ConfigError, DatasetLayoutError, ClipWeightsError, CheckpointError, ImageReadError, FloatingPointError,
               WriteError)


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=str, default="", help="path to the datasets folder ($DATA)")
    parser.add_argument("--output-dir", type=str, default="", help="output directory")
    parser.add_argument("--resume", type=str, default="", help="checkpoint directory to resume training from")
    parser.add_argument("--seed", type=int, default=None, help="random seed (0 included); negative: unseeded")
    parser.add_argument("--source-domains", type=str, nargs="+", help="source domains for DA/DG")
    parser.add_argument("--target-domains", type=str, nargs="+", help="target domains for DA/DG")
    parser.add_argument("--transforms", type=str, nargs="+", help="data augmentation methods")
    parser.add_argument("--config-file", type=str, default="", help="trainer config file")
    parser.add_argument("--dataset-config-file", type=str, default="", help="dataset config file")
    parser.add_argument("--trainer", type=str, default="", help="name of the trainer, e.g. CoOp")
    parser.add_argument("--backbone", type=str, default="", help="CLIP backbone name, e.g. ViT-B/16")
    parser.add_argument("--head", type=str, default="", help="name of head")
    parser.add_argument("--eval-only", action="store_true", help="evaluate only")
    parser.add_argument("--model-dir", type=str, default="", help="training output folder to load for --eval-only")
    parser.add_argument("--load-epoch", type=int, help="epoch of the checkpoint to load (default: best, else last)")
    parser.add_argument("--no-train", action="store_true", help="build everything but do not train")
    parser.add_argument("--unless-finished", action="store_true",
                        help="do nothing if the run folder holds a results record once this process holds its lock")
    parser.add_argument("opts", default=None, nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    return parser


def apply_args(cfg, args):
    for value, key in (
        (args.root, "DATASET.ROOT"),
        (args.output_dir, "OUTPUT_DIR"),
        (args.resume, "RESUME"),
        (args.source_domains, "DATASET.SOURCE_DOMAINS"),
        (args.target_domains, "DATASET.TARGET_DOMAINS"),
        (args.transforms, "INPUT.TRANSFORMS"),
        (args.trainer, "TRAINER.NAME"),
        (args.backbone, "MODEL.BACKBONE.NAME"),
        (args.head, "MODEL.HEAD.NAME"),
    ):
        if value:
            node, _, leaf = key.rpartition(".")
            target = cfg
            for part in filter(None, node.split(".")):
                target = target[part]
            target[leaf] = value
    if args.seed is not None:
        cfg.SEED = args.seed


def check_file(path, what):
    if path and not os.path.isfile(path):
        raise ConfigError(f"The {what} {path} does not exist.")


CONFIG_SUFFIXES = (".yaml", ".yml")


def yaml_error_message(error, path):
    """One line for a ``yaml.YAMLError`` met reading ``path`` (or a ``_BASE_`` file of it): where (line, column,
    and the file when it is a base file) and what is wrong."""
    import yaml

    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    if mark and mark.name != os.path.abspath(path):
        where = f"{mark.name}, {where}"
    problem = getattr(error, "problem", None) or ""
    tag = re.search(r"constructor for the tag '([^']*)'", problem)
    if isinstance(error, yaml.constructor.ConstructorError) and tag:
        name = tag.group(1).replace("tag:yaml.org,2002:", "!!")
        return (f"{where}the YAML tag {name} is refused: config files hold plain values (numbers, strings, lists, "
                "KEY: value groups), never tagged objects; remove the tag.")
    if not problem:  # a ReaderError (a character YAML does not allow) or another error without a mark
        return " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    context = getattr(error, "context", None)
    return f"{where}invalid YAML: {f'{context}, ' if context else ''}{problem}; fix the syntax there."


def plain_config_error(error, origin):
    """A ConfigError from applying a config layer, said in one line where yacs writes a whole node into its
    type-mismatch message: a group of keys (``OPTIM:``) given one value, or a value given a group."""
    message = str(error)
    if "\n" not in message:
        return error
    mismatch = re.search(r"Type mismatch \(<class '([\w.]+)'> vs\. <class '([\w.]+)'>\).* for config key: (\S+)$",
                         message, re.S)
    if mismatch:
        expected, given, key = mismatch.groups()
        if expected.endswith("CfgNode"):
            return ConfigError(f"Cannot apply {origin}: {key} is a group of keys, not a single value; give its keys "
                               f"(e.g. {key}.<NAME> <value>, or indented KEY: value lines under {key}: in a file).")
        if given.endswith("CfgNode"):
            return ConfigError(f"Cannot apply {origin}: {key} takes a single value, not a group of KEY: value lines.")
    return error


def merge_config_file(cfg, path, flag):
    """Merge a YAML config file (with its ``_BASE_`` chain); whatever is wrong with it is one ConfigError line."""
    import yaml

    if not path.endswith(CONFIG_SUFFIXES):
        kind = "Python code, which is never run as a config" if path.endswith(".py") else "not a YAML file"
        raise ConfigError(f"{flag} {path} is {kind}: config files are YAML (.yaml or .yml) with KEY: value lines.")
    origin = f"config file {path} ({flag})"
    try:
        merge_file(cfg, path)
    except ConfigError as error:
        cause = error.__context__  # load_yaml_with_bases raises ConfigError(...) from the yaml.YAMLError
        if isinstance(cause, yaml.YAMLError):
            raise ConfigError(f"Cannot read {origin}: {yaml_error_message(cause, path)}") from None
        raise plain_config_error(error, origin) from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"Cannot read {origin}: it is not UTF-8 text ({error.reason} at byte {error.start}); "
                          "give a YAML file.") from None
    except TypeError as error:  # yacs joins key names: a key that is a number or a list fails there
        raise ConfigError(f"Cannot apply {origin}: every key must be a name (e.g. OPTIM: or LR:), not a number or "
                          f"a list ({error}).") from None


def check_registered(name, registry, what, flag):
    available = sorted(registry.registered_names())
    if not name:
        raise ConfigError(f"No {what} given: pass {flag}.")
    if name not in available:
        same_letters = [option for option in available if option.lower() == name.lower()]
        close = same_letters or difflib.get_close_matches(name, available, n=3, cutoff=0.4)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ConfigError(f"Unknown {what} {name!r}.{hint} Available: {', '.join(available)}.")


def setup_cfg(args):
    cfg = get_cfg_default()
    check_file(args.dataset_config_file, "dataset config file")
    check_file(args.config_file, "trainer config file")
    if args.dataset_config_file:
        merge_config_file(cfg, args.dataset_config_file, "--dataset-config-file")
    if args.config_file:
        merge_config_file(cfg, args.config_file, "--config-file")
        cfg.CONFIG_NAME = os.path.splitext(os.path.basename(args.config_file))[0]
    apply_args(cfg, args)
    try:
        merge_overrides(cfg, args.opts or [])
    except ConfigError as error:
        raise plain_config_error(error, "the KEY VALUE overrides") from None
    check_registered(cfg.TRAINER.NAME, TRAINER_REGISTRY, "trainer", "--trainer")
    check_registered(cfg.DATASET.NAME, DATASET_REGISTRY, "dataset", "--dataset-config-file (or DATASET.NAME)")
    validate_cfg(cfg, training=not (args.eval_only or args.no_train))
    cfg.freeze()
    return cfg


def check_output_dir(path):
    """The run folder exists or can be made, and it and its parent (where the run's lock file goes) are writable."""
    if not path:
        raise ConfigError("No output folder: pass --output-dir (or OUTPUT_DIR).")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"The output folder {path} (--output-dir) is a file, not a folder: give a folder path.")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as error:
        where = f" ({error.filename})" if error.filename and error.filename != path else ""
        raise ConfigError(f"Cannot create the output folder {path} (--output-dir): {error.strerror}{where}; give a "
                          "folder path you can write to.") from None
    for folder in (path, os.path.dirname(os.path.abspath(path))):
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"The folder {folder} is read-only, and the run writes into {path} (--output-dir) and "
                              "its lock file beside it: give an --output-dir you can write to.")


def setup_log(output_dir):
    """Dassl's logger (everything printed is copied to ``<output_dir>/log.txt``) with the file line-buffered:
    Dassl opens it block-buffered, so a run that is killed would leave a log with nothing of its last 8 KB."""
    setup_logger(output_dir)
    log_file = getattr(sys.stdout, "file", None)
    if log_file is not None:
        log_file.reconfigure(line_buffering=True)


def check_one_device(trainer, name):
    """A run uses one device: a trainer that wrapped its model in DataParallel (Dassl's SimpleTrainer does when
    several GPUs are visible) is refused, since it breaks prompt learners."""
    if isinstance(getattr(trainer, "model", None), torch.nn.DataParallel):
        raise ConfigError(f"{name} wrapped its model in DataParallel, which breaks prompt learners: a run uses one "
                          "device; run several runs at once instead (scripts/launch.py --gpus 0,1,...).")


def main(args):
    cfg = setup_cfg(args)
    check_output_dir(cfg.OUTPUT_DIR)
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    run_lock = runlock.acquire(cfg.OUTPUT_DIR)  # noqa: F841  (one writer per run folder, until this process ends)
    # A script looks for the results record before it starts train.py; another process may have finished the run in
    # between. Looked at again under the lock, a finished run is never evaluated twice.
    if args.unless_finished and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "results.json")):
        print(f"Results exist at {cfg.OUTPUT_DIR} (finished by another process; skipped).")
        return
    setup_log(cfg.OUTPUT_DIR)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
        # One device per run (a launcher gives each run its GPU through CUDA_VISIBLE_DEVICES).
        print(f"Device: cuda:0 ({torch.cuda.get_device_name(0)}), one of {torch.cuda.device_count()} visible")
    print("** Arguments **")
    for key in sorted(vars(args)):
        print(f"{key}: {getattr(args, key)}")
    print("** Config **")
    print(cfg)
    if os.environ.get("DUALMI_ENV_INFO", "1") != "0":
        print(f"** System info **\n{collect_env_info()}\n")

    trainer = build_trainer(cfg)
    check_one_device(trainer, cfg.TRAINER.NAME)
    # config.yaml is written once the run is accepted (a training run's, by the trainer once it has resumed), so a
    # refused run leaves the folder's config as it was.
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        write_resolved_config(cfg)
        trainer.test()
        return
    if args.no_train:
        write_resolved_config(cfg)
    else:
        trainer.train()


def one_line(error):
    """A user error's message on one line. An error raised in a DataLoader worker process (an image that cannot be
    read) arrives as "Caught ImageReadError in DataLoader worker process 0. Original Traceback ...": its last line is
    the original ``module.Type: message``."""
    text = str(error).strip()
    if "\nOriginal Traceback" in text:
        head, separator, message = text.splitlines()[-1].partition(": ")
        if separator and head.rpartition(".")[2] == type(error).__name__:
            text = message
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    arguments = build_parser().parse_args()
    try:
        main(arguments)
    except USER_ERRORS as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(2)
    except runlock.RunLocked as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(runlock.LOCKED_EXIT_STATUS)
