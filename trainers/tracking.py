"""Accuracy on both halves of a validation fold after every epoch (``TRAIN.TRACK_NEW``): how fast a learned context
loses what the frozen CLIP knows of classes it never trains on.

A validation run (``DATASET.VAL_FOLD k``, ``SUBSAMPLE_CLASSES base``) trains on the pseudo-base classes; the tracker
also reads the held-out images of the fold's pseudo-new classes (never a test image or a new class: the same items
as that fold's ``SUBSAMPLE_CLASSES new`` run), encodes both halves' images once with the frozen image encoder, and
after every epoch scores them against the class weights of the current context for each half's class names. It
logs ``track_base_acc`` and ``track_new_acc`` in the epoch averages (epoch 0: before the first step), and
``track_base_cos`` / ``track_new_cos``: the mean cosine between each class's weight and its zero-shot weight (the
dataset's own template through the frozen text encoder), i.e. how far the learned classifier has moved from the
hand-crafted one on each half. Before the first step it also prints zero-shot CLIP's accuracy on the same images
(``zs_base_acc``, ``zs_new_acc``).

Training is unchanged by it: what it builds is made with the random states saved and put back, and scoring uses no
randomness and no gradient.
"""
import random

import numpy as np
import torch

from .config import ConfigError
from .encoders import template_features


def _random_states():
    return random.getstate(), np.random.get_state(), torch.get_rng_state()


def _restore(states):
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


class ClassHalfTracker:
    """Held-out images of the pseudo-base and pseudo-new classes of a fold, encoded once, scored every epoch."""

    def __init__(self, trainer):
        cfg, model = trainer.cfg, trainer.model
        if not cfg.DATASET.VAL_FOLD or cfg.DATASET.SUBSAMPLE_CLASSES != "base":
            raise ConfigError(
                "TRAIN.TRACK_NEW scores the pseudo-new classes of a validation fold after every epoch: it needs "
                "DATASET.VAL_FOLD k and DATASET.SUBSAMPLE_CLASSES base (it never reads a test image or a new class). "
                "Add DATASET.VAL_FOLD 1, or set TRAIN.TRACK_NEW False.")
        if not (model.image_independent and model.image_encoder_is_frozen and hasattr(model, "set_classnames")):
            raise ConfigError(
                f"TRAIN.TRACK_NEW: {type(model).__name__} cannot be tracked (it needs class weights that do not depend "
                "on the image, a frozen unprompted image encoder and class names that can be switched: CoOp, KgCoOp, "
                "DualMIPrompt). Set TRAIN.TRACK_NEW False.")
        self.model = model
        self.device = trainer.device
        states = _random_states()
        try:
            new_names, new_loader = self._pseudo_new_half(cfg)
            self.halves = {
                "base": (list(trainer.dm.dataset.classnames), *self._encode(trainer.test_loader)),
                "new": (new_names, *self._encode(new_loader)),
            }
            templates = trainer.hand_crafted_templates("dataset")
            with torch.no_grad():
                self.zero_shot = {half: template_features(model.clip, model.text_encoder, names, templates).float()
                                  for half, (names, _, _) in self.halves.items()}
        finally:
            _restore(states)

    def zero_shot_accuracy(self):
        """``{"zs_base_acc": %, "zs_new_acc": %}``: zero-shot CLIP (the dataset's template) on the same images."""
        return {f"zs_{half}_acc": self._accuracy(features, labels, self.zero_shot[half])
                for half, (_, features, labels) in self.halves.items()}

    @staticmethod
    def _accuracy(features, labels, weights):
        return round(100.0 * ((features @ weights.t()).argmax(dim=-1) == labels).float().mean().item(), 4)

    @staticmethod
    def _pseudo_new_half(cfg):
        from dassl.data.data_manager import build_data_loader
        from dassl.data.datasets import build_dataset
        from dassl.data.transforms import build_transform

        from .data import CheckedImages

        other = cfg.clone()
        other.defrost()
        other.DATASET.SUBSAMPLE_CLASSES = "new"
        other.freeze()
        dataset = build_dataset(other)
        loader = build_data_loader(other, sampler_type="SequentialSampler", data_source=dataset.test,
                                   batch_size=other.DATALOADER.TEST.BATCH_SIZE,
                                   tfm=build_transform(other, is_train=False), is_train=False,
                                   dataset_wrapper=CheckedImages)
        return list(dataset.classnames), loader

    @torch.no_grad()
    def _encode(self, loader):
        features, labels = [], []
        for batch in loader:
            features.append(self.model.encode_image(batch["img"].to(self.device), cacheable=False))
            labels.append(batch["label"].to(self.device))
        return torch.cat(features), torch.cat(labels)

    @torch.no_grad()
    def measure(self):
        """``{"track_<half>_acc": %, "track_<half>_cos": mean cosine to the zero-shot weights}`` for both halves with
        the current context; the model is left on the pseudo-base class names it trains on."""
        found = {}
        try:
            for half, (names, features, labels) in self.halves.items():
                self.model.set_classnames(names)
                weights = self.model.class_weights().float()
                found[f"track_{half}_acc"] = self._accuracy(features, labels, weights)
                found[f"track_{half}_cos"] = round((weights * self.zero_shot[half]).sum(dim=-1).mean().item(), 6)
        finally:
            self.model.set_classnames(self.halves["base"][0])
        return found
