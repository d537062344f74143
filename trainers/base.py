"""The trainer base every method builds on: Dassl's ``TrainerX`` with frozen CLIP and learned prompts.

What it adds to Dassl, once for all trainers:
- CLIP loading, precision (fp32 / fp16 / amp / bf16) and freezing;
- the optimiser over the learned parameters only and Dassl's warm-up + cosine schedule (``schedule.py``);
- checkpoints that hold only learned parameters, optimiser and schedule, load with ``weights_only=True`` and
  ignore class-dependent buffers (a context trained on base classes evaluates on new ones);
- evaluation that computes image-independent class weights once instead of once per batch;
- a results record per final evaluation, and clear errors for corrupt images, NaN losses, missing checkpoints.
"""
import glob
import os
import random
import re
import time

import numpy as np
import torch
from dassl.data import DataManager
from dassl.data.data_manager import DatasetWrapper
from dassl.engine import TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_lr_scheduler, build_optimizer
from dassl.utils import MetricMeter
from tqdm import tqdm

from common.images import ImageReadError, read_rgb  # noqa: F401  (ImageReadError: re-exported)

from .clip_loader import (PRECISIONS, cast_frozen_weights, load_clip, precision_autocast, resolve_precision,
                          weights_dtype)
from common.fileio import atomic_open, atomic_torch_save
from .config import config_fingerprint
from .records import library_versions, now, write_record
from .schedule import WarmupScheduler

CHECKPOINT_PREFIX = "model.pth.tar-"
BEST_CHECKPOINT = "model-best.pth.tar"


class CheckedImages(DatasetWrapper):
    """Dassl's dataset wrapper (same output dictionary) reading images with ``read_rgb``: every common image mode
    is read correctly, and a file that cannot be read is reported by name."""

    def __getitem__(self, idx):
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        img0 = read_rgb(item.impath)
        if self.transform is None:
            output["img"] = img0
        else:
            transforms = self.transform if isinstance(self.transform, (list, tuple)) else [self.transform]
            for i, transform in enumerate(transforms):
                views = [transform(img0) for _ in range(self.k_tfm)]
                output["img" if i == 0 else f"img{i + 1}"] = views[0] if len(views) == 1 else views
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output


class CheckpointError(RuntimeError):
    pass


def build_lr_schedule(optimizer, optim_cfg):
    """Dassl's schedule for ``optim_cfg``: its own successor scheduler behind our warm-up wrapper."""
    successor_cfg = optim_cfg.clone()
    successor_cfg.defrost()
    successor_cfg.WARMUP_EPOCH = 0
    successor = build_lr_scheduler(optimizer, successor_cfg)
    warmup = optim_cfg.WARMUP_EPOCH
    if warmup <= 0:
        return successor
    if not optim_cfg.WARMUP_RECOUNT:
        successor.last_epoch = warmup
    return WarmupScheduler(
        optimizer, successor, warmup, optim_cfg.WARMUP_TYPE, optim_cfg.WARMUP_CONS_LR, optim_cfg.WARMUP_MIN_LR
    )


def checkpoint_epochs(folder):
    epochs = []
    for path in glob.glob(os.path.join(folder, CHECKPOINT_PREFIX + "*")):
        match = re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"(\d+)", os.path.basename(path))
        if match:
            epochs.append(int(match.group(1)))
    return sorted(epochs)


def load_checkpoint_file(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"Cannot load checkpoint {path} with weights_only=True ({type(err).__name__}: {err}). "
            "Checkpoints written by this toolbox hold only tensors and numbers; a file that needs arbitrary "
            "pickled objects is refused because loading it could run code."
        ) from None


def random_states():
    """Every random state that decides the rest of a run, as plain data (tensors, numbers, tuples).

    The training sampler and the augmentations draw from these (Dassl's RandomSampler seeds itself from torch's
    global generator at each epoch; its other samplers use Python's ``random``), so restoring them at a
    checkpoint makes the resumed run draw exactly what the uninterrupted run drew."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states):
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["gauss"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class PromptTrainer(TrainerX):
    """Subclasses set ``CONFIG_KEY`` (their node under ``cfg.TRAINER``) and implement ``build_prompt_model``
    and, when they learn something, ``compute_loss``."""

    CONFIG_KEY = None
    MODEL_NAME = "prompt_learner"
    epoch_averages = ()  # per-epoch averages of what training logs; a list from before_train on (eval-only: none)

    @property
    def tcfg(self):
        return self.cfg.TRAINER[self.CONFIG_KEY]

    def check_cfg(self, cfg):
        prec = cfg.TRAINER[self.CONFIG_KEY].PREC
        if prec not in PRECISIONS:
            raise ValueError(f"TRAINER.{self.CONFIG_KEY}.PREC must be one of {', '.join(PRECISIONS)}; got {prec!r}")

    # ----- data -----
    def build_data_loader(self):
        dm = DataManager(self.cfg, dataset_wrapper=CheckedImages)
        self.train_loader_x = dm.train_loader_x
        self.train_loader_u = dm.train_loader_u
        self.val_loader = dm.val_loader
        self.test_loader = dm.test_loader
        self.num_classes = dm.num_classes
        self.num_source_domains = dm.num_source_domains
        self.lab2cname = dm.lab2cname
        self.dm = dm

    @property
    def dataset_template(self):
        from .templates import DEFAULT_TEMPLATE

        return getattr(self.dm.dataset, "template", DEFAULT_TEMPLATE)

    def hand_crafted_templates(self, kind):
        """The templates of a hand-crafted view: ``dataset`` (its own) or ``ensemble`` (see ``select_templates``)."""
        from .templates import select_templates

        dataset = self.dm.dataset
        return select_templates(kind, self.dataset_template, getattr(dataset, "ensemble_adds_template", True),
                                getattr(dataset, "ensemble_templates", None))

    # ----- model -----
    def build_prompt_model(self, clip_model, classnames):
        raise NotImplementedError

    def build_model(self):
        cfg = self.cfg
        backbone = cfg.MODEL.BACKBONE
        self.precision = resolve_precision(self.tcfg.PREC, self.device)
        print(f"Loading CLIP (backbone: {backbone.NAME}{', file ' + backbone.PATH if backbone.PATH else ''})")
        clip_model = load_clip(backbone.NAME, backbone.PATH, backbone.CACHE_DIR)
        resolution = clip_model.visual.input_resolution
        if tuple(cfg.INPUT.SIZE) != (resolution, resolution):
            raise ValueError(
                f"INPUT.SIZE is {tuple(cfg.INPUT.SIZE)} but this CLIP takes {resolution}x{resolution} images: "
                f"set INPUT.SIZE ({resolution}, {resolution})."
            )
        cast_frozen_weights(clip_model, weights_dtype(self.precision))
        self.model = self.build_prompt_model(clip_model, self.dm.dataset.classnames)
        self.model.to(self.device)
        learned = self.learned_parameters()
        print(f"Learned parameters: {sum(p.numel() for p in learned.values()):,} in {len(learned)} tensors")
        self.optim = self.sched = None
        if learned:
            self.optim = build_optimizer(list(learned.values()), cfg.OPTIM)
            self.sched = build_lr_schedule(self.optim, cfg.OPTIM)
        self.register_model(self.MODEL_NAME, self.model, self.optim, self.sched)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "amp" else None

    def learned_parameters(self):
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    def autocast(self):
        return precision_autocast(self.precision)

    # ----- training -----
    def compute_loss(self, images, labels):
        """``(loss, logits, extra)``: the total loss, the classification logits, and extra scalars to log."""
        return self.model.training_loss(images, labels)

    def step_diagnostics(self):
        """Extra scalars measured on the last batch of each epoch, before the optimiser step (e.g. what each loss
        term sends to the learned parameters); none by default."""
        return {}

    def forward_backward(self, batch):
        images, labels = self.parse_batch_train(batch)
        with self.autocast():
            loss, logits, extra = self.compute_loss(images, labels)
        if self.batch_idx + 1 == self.num_batches:
            extra = {**extra, **self.step_diagnostics()}
        self.optimize(loss)
        summary = {"loss": loss.item(), "acc": compute_accuracy(logits, labels)[0].item()}
        summary.update({key: float(value) for key, value in extra.items()})
        if getattr(self, "epoch_meter", None) is not None:
            self.epoch_meter.update(summary)
        return summary

    def parse_batch_train(self, batch):
        return batch["img"].to(self.device), batch["label"].to(self.device)

    def check_finite(self, loss):
        if self.cfg.TRAIN.STOP_ON_NAN and not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"The loss is {loss.item()} at epoch {self.epoch + 1}/{self.max_epoch}, batch "
                f"{self.batch_idx + 1}/{self.num_batches}: training stopped. Try a lower OPTIM.LR, or PREC fp32/amp "
                "if the run is in fp16."
            )

    def optimize(self, loss):
        self.check_finite(loss)
        self.optim.zero_grad()
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optim)
            self.scaler.update()
        else:
            loss.backward()
            self.optim.step()

    def run_epoch(self):
        self.epoch_meter = MetricMeter()
        super().run_epoch()
        self.log_epoch_averages()
        self.update_lr()

    def log_epoch_averages(self):
        """One line and one tensorboard scalar (``epoch/<name>``) per logged quantity, averaged over the epoch:
        Dassl prints only every PRINT_FREQ batches and its ``train/<name>`` curves are per batch."""
        meters = self.epoch_meter.meters
        print(f"epoch [{self.epoch + 1}/{self.max_epoch}] averages: "
              + " ".join(f"{name} {meter.avg:.4f}" for name, meter in meters.items()))
        for name, meter in meters.items():
            self.write_scalar(f"epoch/{name}", meter.avg, self.epoch + 1)
        averages = {name: round(float(meter.avg), 6) for name, meter in meters.items()}
        self.epoch_averages.append({"epoch": self.epoch + 1, **averages})

    def before_train(self):
        self.epoch_averages = []  # one dict per epoch trained by this process (the record summarises them)
        super().before_train()
        self.train_started = time.time()

    # ----- evaluation -----
    @torch.no_grad()
    def test(self, split=None):
        final = split is None
        self.set_model_mode("eval")
        self.evaluator.reset()
        split = split or self.cfg.TEST.SPLIT
        loader = self.val_loader if split == "val" and self.val_loader is not None else self.test_loader
        split = "val" if loader is self.val_loader else "test"
        print(f"Evaluate on the *{split}* set")
        started = time.time()
        with self.autocast():
            self._eval_weights = self.model.evaluation_weights()
            try:
                for batch in tqdm(loader):
                    images, labels = self.parse_batch_test(batch)
                    self.evaluator.process(self.model_inference(images).float(), labels)
            finally:
                self._eval_weights = None
        results = self.evaluator.evaluate()
        for key, value in results.items():
            self.write_scalar(f"{split}/{key}", value, self.epoch)
        if final:
            self.write_results_record(split, results, time.time() - started)
        return list(results.values())[0]

    def model_inference(self, images):
        return self.model.predict(images, getattr(self, "_eval_weights", None))

    def write_results_record(self, split, results, eval_time):
        cfg = self.cfg
        trained = getattr(self, "train_started", None)
        record = {
            "dataset": cfg.DATASET.NAME,
            "trainer": cfg.TRAINER.NAME,
            "config": cfg.CONFIG_NAME,
            "protocol": cfg.PROTOCOL,
            "backbone": cfg.MODEL.BACKBONE.NAME,
            "seed": cfg.SEED,
            "subsample": cfg.DATASET.SUBSAMPLE_CLASSES,
            "shots": cfg.DATASET.NUM_SHOTS,
            "split": split,
            # the epoch of the weights evaluated: the loaded checkpoint's (eval-only, best_val) or the last trained
            "epoch": getattr(self, "loaded_epoch", None if trained is None else self.max_epoch),
            "num_classes": self.num_classes,
            "num_images": self.evaluator._total,
            "accuracy": results["accuracy"],
            "macro_f1": results["macro_f1"],
            "error_rate": results["error_rate"],
            "train_time_s": None if trained is None else round(time.time() - trained - eval_time, 3),
            "eval_time_s": round(eval_time, 3),
            "eval_only": trained is None,
            "model_dir": getattr(self, "loaded_from", ""),
            "output_dir": os.path.abspath(cfg.OUTPUT_DIR),
            "created": now(),
            "config_sha256": config_fingerprint(cfg),
            "versions": library_versions(),
        }
        history = self.epoch_averages
        if history:  # what training logged, first and last epoch of this process (per-epoch: tensorboard, log.txt)
            record["training"] = {"first_epoch": history[0], "last_epoch": history[-1]}
        if cfg.DATASET.VAL_FOLD:  # held-out training images of a validation fold: never taken for a test result
            record["split"] = f"val_fold{cfg.DATASET.VAL_FOLD}"
        path = write_record(cfg.OUTPUT_DIR, record)
        print(f"Results record written to {path}")

    # ----- checkpoints -----
    def learned_state(self):
        return {name: p.detach().cpu().clone() for name, p in self.learned_parameters().items()}

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        if not self.learned_parameters():
            return
        folder = os.path.join(directory, self.MODEL_NAME)
        name = model_name or f"{CHECKPOINT_PREFIX}{epoch + 1}"
        state = {
            "trainer": self.cfg.TRAINER.NAME,  # a checkpoint is only loaded by the trainer that wrote it
            "state_dict": self.learned_state(),
            "epoch": epoch + 1,
            "optimizer": self.optim.state_dict(),
            "scheduler": self.sched.state_dict(),
            "val_result": val_result,
            "random_states": random_states(),
            **self.extra_checkpoint_state(),
        }
        path = os.path.join(folder, name)
        atomic_torch_save(state, path)
        with atomic_open(os.path.join(folder, "checkpoint")) as handle:
            handle.write(name + "\n")
        print(f"Checkpoint saved to {path}")

    def check_checkpoint_trainer(self, checkpoint, source):
        """Refuse a checkpoint written by another trainer (older checkpoints, which do not say, are accepted)."""
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
            raise CheckpointError(f"{source} is not a checkpoint of this toolbox (no state_dict of tensors).")
        writer = checkpoint.get("trainer")
        if writer is not None and writer != self.cfg.TRAINER.NAME:
            raise CheckpointError(f"{source} was written by {writer}, not {self.cfg.TRAINER.NAME}: evaluate it with "
                                  f"--trainer {writer} (its parameters mean something else to another trainer).")

    def extra_checkpoint_state(self):
        """Training state of a subclass beyond parameters, optimiser and schedule (plain tensors and numbers)."""
        return {}

    def load_extra_checkpoint_state(self, checkpoint, source):
        """Restore ``extra_checkpoint_state`` when a run resumes."""

    def load_learned(self, state_dict, source):
        learned = self.learned_parameters()
        missing = [name for name in learned if name not in state_dict]
        if missing:
            raise CheckpointError(f"{source} lacks learned parameters {', '.join(missing)}.")
        ignored = [name for name in state_dict if name not in learned]
        if ignored:
            print(f"Ignoring entries of {source} that this model does not learn: {', '.join(ignored)}")
        class_specific = set(self.model.class_specific_parameters())
        for name, param in learned.items():
            saved = state_dict[name]
            if not isinstance(saved, torch.Tensor):
                raise CheckpointError(f"{source}: {name} is a {type(saved).__name__}, not a tensor: the file is not a "
                                      "checkpoint of this toolbox, or it is damaged.")
            if saved.is_floating_point() and not torch.isfinite(saved).all():
                raise CheckpointError(f"{source}: {name} holds NaN or infinite values; a model with them would only "
                                      "record nonsense. Use an earlier checkpoint, or train again.")
            if saved.shape != param.shape:
                if name in class_specific and saved.shape[1:] == param.shape[1:]:
                    raise CheckpointError(
                        f"{source}: {name} is class-specific (CSC True) and was learned for {saved.shape[0]} "
                        f"classes, but this dataset has {param.shape[0]}. Class-specific context cannot transfer "
                        "to other classes; use class-shared context (CSC False) for base-to-new or cross-dataset."
                    )
                raise CheckpointError(
                    f"{source}: {name} has shape {tuple(saved.shape)} but the model expects {tuple(param.shape)} "
                    "(a different backbone or N_CTX?)."
                )
            with torch.no_grad():
                param.copy_(saved.to(param.dtype))

    def load_model(self, directory, epoch=None):
        if not directory:
            print("No --model-dir given: evaluating the model as built (no checkpoint loaded)")
            return
        if not self.learned_parameters():
            print(f"{self.cfg.TRAINER.NAME} learns nothing: --model-dir is not needed and is ignored")
            return
        folder = os.path.join(directory, self.MODEL_NAME)
        epochs = checkpoint_epochs(folder)
        if epoch is not None:
            path = os.path.join(folder, f"{CHECKPOINT_PREFIX}{epoch}")
            if not os.path.isfile(path):
                have = ", ".join(map(str, epochs)) or "none"
                raise CheckpointError(f"No checkpoint for epoch {epoch} in {folder} (epochs saved: {have}).")
        elif os.path.isfile(os.path.join(folder, BEST_CHECKPOINT)):
            path = os.path.join(folder, BEST_CHECKPOINT)
        elif epochs:
            path = os.path.join(folder, f"{CHECKPOINT_PREFIX}{epochs[-1]}")
        else:
            raise CheckpointError(
                f"No checkpoint in {directory}: expected {folder}/{CHECKPOINT_PREFIX}<epoch> or {BEST_CHECKPOINT}. "
                "Train first, or point --model-dir at the output folder of a finished training run."
            )
        checkpoint = load_checkpoint_file(path)
        self.check_checkpoint_trainer(checkpoint, path)
        self.load_learned(checkpoint["state_dict"], path)
        self.loaded_epoch = checkpoint.get("epoch")
        self.loaded_from = os.path.abspath(directory)
        print(f"Loaded {path} (epoch {self.loaded_epoch})")

    def resume_model_if_exist(self, directory):
        folder = os.path.join(directory, self.MODEL_NAME)
        pointer = os.path.join(folder, "checkpoint")
        if not self.learned_parameters() or not os.path.isfile(pointer):
            print("No checkpoint found, train from scratch")
            return 0
        with open(pointer) as handle:
            path = os.path.join(folder, handle.readline().strip())
        checkpoint = load_checkpoint_file(path)
        self.check_checkpoint_trainer(checkpoint, path)
        self.load_learned(checkpoint["state_dict"], path)
        self.optim.load_state_dict(checkpoint["optimizer"])
        self.sched.load_state_dict(checkpoint["scheduler"])
        if "random_states" in checkpoint:
            restore_random_states(checkpoint["random_states"])
        self.load_extra_checkpoint_state(checkpoint, path)
        print(f"Resumed from {path} (epoch {checkpoint['epoch']})")
        return checkpoint["epoch"]
