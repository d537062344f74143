"""The trainer base every method builds on: Dassl's ``TrainerX`` with frozen CLIP and learned prompts.

What it adds to Dassl, once for all trainers: CLIP loading, precision and freezing (``clip_loader``); the optimiser
over the learned parameters and Dassl's warm-up + cosine schedule (``schedule``); checkpoints of learned parameters
only, with random states, loaded safely (``checkpoints``); evaluation that computes image-independent class weights
once; a results record per final evaluation (``records``); clear errors for corrupt images, NaN losses and
missing checkpoints. Images are read by ``data.CheckedImages``.
"""
import time

import torch
from dassl.engine import TrainerX
from dassl.metrics import compute_accuracy
from dassl.optim import build_optimizer
from dassl.utils import MetricMeter
from tqdm import tqdm

from common.images import ImageReadError  # noqa: F401  (re-exported for train.py)

from .checkpoints import CheckpointError, CheckpointMethods  # noqa: F401  (CheckpointError: re-exported)
from .clip_loader import PRECISIONS, backward_and_step, grad_scaler, load_frozen_clip, precision_autocast, resolve_precision
from .config import ConfigError, write_resolved_config
from .data import build_data_manager
from .records import build_record, write_record
from .schedule import build_lr_schedule
from .templates import dataset_templates
from .tracking import ClassHalfTracker


class PromptTrainer(CheckpointMethods, TrainerX):
    """Subclasses set ``CONFIG_KEY`` (their node under ``cfg.TRAINER``) and implement ``build_prompt_model``
    and, when they learn something, ``compute_loss`` (by default the model's ``training_loss``). Checkpoints:
    ``checkpoints.CheckpointMethods``."""

    CONFIG_KEY = None
    MODEL_NAME = "prompt_learner"

    def __init__(self, cfg):
        # Every piece of run state, created here (Dassl's __init__ below builds the data and the model).
        self.epoch_meter = None  # this epoch's averages of what training logs (from the first epoch on)
        self.epoch_averages = []  # one dict per epoch trained by this process (the record summarises them)
        self.train_started = None  # time training started; None: an evaluation-only run
        self.loaded_epoch = None  # epoch of the checkpoint loaded for evaluation
        self.loaded_from = ""  # the folder it came from
        self.tracker = None  # TRAIN.TRACK_NEW: both halves of a validation fold, scored after every epoch
        super().__init__(cfg)

    @property
    def tcfg(self):
        return self.cfg.TRAINER[self.CONFIG_KEY]

    def check_cfg(self, cfg):
        prec = cfg.TRAINER[self.CONFIG_KEY].PREC
        if prec not in PRECISIONS:
            raise ValueError(f"TRAINER.{self.CONFIG_KEY}.PREC must be one of {', '.join(PRECISIONS)}; got {prec!r}")

    # ----- data and model -----
    def build_data_loader(self):
        dm = self.dm = build_data_manager(self.cfg)
        self.train_loader_x, self.train_loader_u = dm.train_loader_x, dm.train_loader_u
        self.val_loader, self.test_loader = dm.val_loader, dm.test_loader
        self.num_classes, self.num_source_domains, self.lab2cname = dm.num_classes, dm.num_source_domains, dm.lab2cname

    def hand_crafted_templates(self, kind):
        """The templates of a hand-crafted view: ``dataset`` (its own) or ``ensemble`` (see ``select_templates``)."""
        return dataset_templates(kind, self.dm.dataset)

    def build_prompt_model(self, clip_model, classnames):  # the trainer's model around the frozen CLIP
        raise NotImplementedError

    def build_model(self):
        cfg = self.cfg
        self.precision = resolve_precision(self.tcfg.PREC, self.device)
        clip_model = load_frozen_clip(cfg.MODEL.BACKBONE, cfg.INPUT.SIZE, self.precision)
        try:
            model = self.build_prompt_model(clip_model, self.dm.dataset.classnames)
        except ValueError as error:  # the models check their settings against the CLIP they get (depths, widths)
            raise ConfigError(str(error)) from None
        self.model = model.to(self.device)
        if cfg.MODEL.CACHE_IMAGE_FEATURES:
            if not self.model.image_encoder_is_frozen:
                raise ConfigError(
                    f"MODEL.CACHE_IMAGE_FEATURES: {self.__class__.__name__} prompts CLIP's image encoder, so an image's "
                    "features change as it learns and cannot be reused. Set MODEL.CACHE_IMAGE_FEATURES False.")
            self.model.use_image_cache()
        learned = self.learned_parameters()
        print(f"Learned parameters: {sum(p.numel() for p in learned.values()):,} in {len(learned)} tensors")
        self.optim = build_optimizer(list(learned.values()), cfg.OPTIM) if learned else None
        self.sched = build_lr_schedule(self.optim, cfg.OPTIM) if learned else None
        self.register_model(self.MODEL_NAME, self.model, self.optim, self.sched)
        self.scaler = grad_scaler(self.precision)

    def learned_parameters(self):
        return {name: p for name, p in self.model.named_parameters() if p.requires_grad}

    def autocast(self):
        return precision_autocast(self.precision)

    # ----- training -----
    def compute_loss(self, images, labels):
        """``(loss, logits, extra)``: the total loss, the classification logits, and extra scalars to log."""
        return self.model.training_loss(images, labels)

    def step_diagnostics(self):
        """Extra scalars measured on the last batch of each epoch, before the optimiser step; none by default."""
        return {}

    def forward_backward(self, batch):
        images, labels = batch["img"].to(self.device), batch["label"].to(self.device)
        with self.autocast():
            loss, logits, extra = self.compute_loss(images, labels)
        if self.batch_idx + 1 == self.num_batches:
            extra = {**extra, **self.step_diagnostics()}
        if self.cfg.TRAIN.STOP_ON_NAN and not torch.isfinite(loss).all():
            raise FloatingPointError(
                f"The loss is {loss.item()} at epoch {self.epoch + 1}/{self.max_epoch}, batch {self.batch_idx + 1}/"
                f"{self.num_batches}: training stopped. Try a lower OPTIM.LR, or PREC fp32/amp if the run is in fp16.")
        self.optim.zero_grad()
        backward_and_step(loss, self.optim, self.scaler)
        summary = {"loss": loss.item(), "acc": compute_accuracy(logits, labels)[0].item(),
                   **{key: float(value) for key, value in extra.items()}}
        if self.epoch_meter is not None:  # None when called outside an epoch (tests of a single step)
            self.epoch_meter.update(summary)
        return summary

    def before_train(self):
        super().before_train()  # resumes: a checkpoint this run may not continue stops it here
        if self.cfg.TRAIN.TRACK_NEW:  # refused (ConfigError) where it cannot track: before anything is written
            self.tracker = ClassHalfTracker(self)
            tracked = {**self.tracker.measure(), **self.tracker.zero_shot_accuracy()}
            print(f"epoch [{self.start_epoch}/{self.max_epoch}] tracked: "
                  + " ".join(f"{name} {value:.4f}" for name, value in tracked.items()))
        # Only now that the run is accepted: a refused run leaves the folder's config.yaml as it was.
        write_resolved_config(self.cfg)
        self.train_started = time.time()

    def after_train(self):
        cache = getattr(self.model, "image_cache", None)
        if cache is not None:
            print(f"Image feature cache: {cache.misses} distinct images encoded, {cache.hits} encodings reused")
        super().after_train()

    def run_epoch(self):
        self.epoch_meter = MetricMeter()
        super().run_epoch()
        if self.tracker is not None:
            self.epoch_meter.update(self.tracker.measure())
        self.log_epoch_averages()
        self.update_lr()

    def log_epoch_averages(self):
        """One line and one tensorboard scalar (``epoch/<name>``) per logged quantity, averaged over the epoch:
        Dassl prints only every PRINT_FREQ batches and its ``train/<name>`` curves are per batch."""
        averages = {name: round(float(meter.avg), 6) for name, meter in self.epoch_meter.meters.items()}
        print(f"epoch [{self.epoch + 1}/{self.max_epoch}] averages: "
              + " ".join(f"{name} {meter.avg:.4f}" for name, meter in self.epoch_meter.meters.items()))
        for name, value in averages.items():
            self.write_scalar(f"epoch/{name}", value, self.epoch + 1)
        self.epoch_averages.append({"epoch": self.epoch + 1, **averages})

    # ----- evaluation -----
    def test(self, split=None):
        """Dassl calls ``test()`` for the final evaluation (on TEST.SPLIT; it writes the results record) and
        ``test("val")`` to select a model during training (it writes none)."""
        return self.evaluate(split or self.cfg.TEST.SPLIT, writes_record=split is None)

    @torch.no_grad()
    def evaluate(self, split, writes_record):
        self.set_model_mode("eval")
        self.evaluator.reset()
        loader = self.val_loader if split == "val" and self.val_loader is not None else self.test_loader
        split = "val" if loader is self.val_loader else "test"
        print(f"Evaluate on the *{split}* set")
        started = time.time()
        with self.autocast():
            weights = self.model.evaluation_weights()  # image-independent class weights: computed once
            for batch in tqdm(loader):
                images, labels = self.parse_batch_test(batch)
                self.evaluator.process(self.model.predict(images, weights).float(), labels)
        results = self.evaluator.evaluate()
        for key, value in results.items():
            self.write_scalar(f"{split}/{key}", value, self.epoch)
        if writes_record:
            self.write_results_record(split, results, time.time() - started)
        return list(results.values())[0]

    def write_results_record(self, split, results, eval_time):
        trained = self.train_started is not None
        record = build_record(
            self.cfg, split, results, self.num_classes, self.evaluator._total, eval_time,
            train_time=time.time() - self.train_started - eval_time if trained else None,
            epoch=self.loaded_epoch if self.loaded_epoch is not None else (self.max_epoch if trained else None),
            model_dir=self.loaded_from, training_history=self.epoch_averages)
        print(f"Results record written to {write_record(self.cfg.OUTPUT_DIR, record)}")
