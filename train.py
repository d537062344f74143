"""Train or evaluate a prompt-learning method on CLIP with Dassl; the command line is CoOp's.

Config layers, each overriding the one before: Dassl's and the trainers' defaults, the dataset yaml, the trainer
yaml, the command-line options, and trailing ``KEY VALUE`` overrides.
"""
import argparse
import difflib
import os
import sys

from common.dassl_env import import_dassl

import_dassl()  # first: Dassl without its import side effects

import datasets  # noqa: E402
import torch  # noqa: E402
from trainers import registry  # noqa: E402

registry.register_with_dassl()
datasets.register_with_dassl()

from dassl.data.datasets import DATASET_REGISTRY  # noqa: E402
from dassl.engine import TRAINER_REGISTRY, build_trainer  # noqa: E402
from dassl.utils import collect_env_info, set_random_seed, setup_logger  # noqa: E402
from datasets.splits import DatasetLayoutError  # noqa: E402
from trainers.base import CheckpointError, ImageReadError  # noqa: E402
from trainers.clip_loader import ClipWeightsError  # noqa: E402
from trainers.config import ConfigError, get_cfg_default, merge_file, merge_overrides, validate_cfg  # noqa: E402

USER_ERRORS = (ConfigError, DatasetLayoutError, ClipWeightsError, CheckpointError, ImageReadError, FloatingPointError)


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
        merge_file(cfg, args.dataset_config_file)
    if args.config_file:
        merge_file(cfg, args.config_file)
        cfg.CONFIG_NAME = os.path.splitext(os.path.basename(args.config_file))[0]
    apply_args(cfg, args)
    merge_overrides(cfg, args.opts or [])
    check_registered(cfg.TRAINER.NAME, TRAINER_REGISTRY, "trainer", "--trainer")
    check_registered(cfg.DATASET.NAME, DATASET_REGISTRY, "dataset", "--dataset-config-file (or DATASET.NAME)")
    validate_cfg(cfg)
    cfg.freeze()
    return cfg


def main(args):
    cfg = setup_cfg(args)
    if cfg.SEED >= 0:
        print(f"Setting fixed seed: {cfg.SEED}")
        set_random_seed(cfg.SEED)
    setup_logger(cfg.OUTPUT_DIR)
    if torch.cuda.is_available() and cfg.USE_CUDA:
        torch.backends.cudnn.benchmark = True
    print("** Arguments **")
    for key in sorted(vars(args)):
        print(f"{key}: {getattr(args, key)}")
    print("** Config **")
    print(cfg)
    if os.environ.get("DUALMI_ENV_INFO", "1") != "0":
        print(f"** System info **\n{collect_env_info()}\n")

    trainer = build_trainer(cfg)
    if args.eval_only:
        trainer.load_model(args.model_dir, epoch=args.load_epoch)
        trainer.test()
        return
    if not args.no_train:
        trainer.train()


if __name__ == "__main__":
    arguments = build_parser().parse_args()
    try:
        main(arguments)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
