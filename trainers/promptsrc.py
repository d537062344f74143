"""PromptSRC: IVLP's deep prompts, self-regularised towards the frozen CLIP, with Gaussian prompt aggregation over the
epochs (Khattak et al., ICCV 2023; model in promptsrc_model.py). The official code is muzairkhattak/PromptSRC,
trainers/promptsrc.py."""
import math

from dassl.engine import TRAINER_REGISTRY

from .aggregation import AggregationCheckpoints, GaussianPromptAggregation
from .base import PromptTrainer
from .config import ConfigError, trainer_config
from .ivlp import build_ivlp_kwargs, describe, ivlp_config
from .promptsrc_model import FROZEN_TEMPLATE_KINDS, IMAGENET_TEMPLATES, PromptSRCCLIP


@trainer_config("PROMPTSRC")
def promptsrc_config():
    # The keys and defaults of the official code (its train.py, cfg.TRAINER.PROMPTSRC; the same values as its
    # base-to-new config), plus LOGIT_LOSS_WEIGHT and FROZEN_TEMPLATES, which are this toolbox's.
    node = ivlp_config()  # IVLP's prompts, with the same keys and values
    node.TEXT_LOSS_WEIGHT = 25.0  # weight of the L1 distance between prompted and frozen text features (0: off)
    node.IMAGE_LOSS_WEIGHT = 10.0  # weight of the L1 distance between prompted and frozen image features (0: off)
    node.LOGIT_LOSS_WEIGHT = 1.0  # weight of KL(frozen || prompted) over the logits (official: 1, fixed; 0: off)
    node.GPA_MEAN = 15.0  # Gaussian prompt aggregation: the epoch the Gaussian is centred on
    node.GPA_STD = 1.0  # its spread in epochs (0: the single epoch nearest GPA_MEAN)
    node.FROZEN_TEMPLATES = "imagenet"  # templates of the frozen text features: imagenet (official), ensemble, dataset
    return node


@TRAINER_REGISTRY.register()
class PromptSRC(AggregationCheckpoints, PromptTrainer):
    CONFIG_KEY = "PROMPTSRC"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        c = cfg.TRAINER[self.CONFIG_KEY]
        for key in ("TEXT_LOSS_WEIGHT", "IMAGE_LOSS_WEIGHT", "LOGIT_LOSS_WEIGHT", "GPA_STD"):
            if not (math.isfinite(c[key]) and c[key] >= 0):
                raise ConfigError(f"TRAINER.{self.CONFIG_KEY}.{key} must be finite and >= 0; got {c[key]}")
        if not math.isfinite(c.GPA_MEAN):
            raise ConfigError(f"TRAINER.{self.CONFIG_KEY}.GPA_MEAN must be finite; got {c.GPA_MEAN}")
        if c.FROZEN_TEMPLATES not in FROZEN_TEMPLATE_KINDS:
            raise ConfigError(f"TRAINER.{self.CONFIG_KEY}.FROZEN_TEMPLATES must be one of "
                              f"{', '.join(FROZEN_TEMPLATE_KINDS)}; got {c.FROZEN_TEMPLATES!r}")

    def build_prompt_model(self, clip_model, classnames):
        c = self.tcfg
        kind = c.FROZEN_TEMPLATES
        templates = IMAGENET_TEMPLATES if kind == "imagenet" else self.hand_crafted_templates(kind)
        model = PromptSRCCLIP(clip_model, classnames, templates, **build_ivlp_kwargs(c),
                              text_loss_weight=c.TEXT_LOSS_WEIGHT, image_loss_weight=c.IMAGE_LOSS_WEIGHT,
                              logit_loss_weight=c.LOGIT_LOSS_WEIGHT)
        describe("PromptSRC", model)
        print(f"Self-consistency weights: text {model.text_loss_weight}, image {model.image_loss_weight}, logits "
              f"{model.logit_loss_weight}; frozen text features from {len(templates)} templates ({kind})")
        return model

    # ----- Gaussian prompt aggregation over the epochs (its checkpoint state: aggregation.AggregationCheckpoints) -----
    def before_train(self):
        c = self.tcfg
        # Before the resume (in Dassl's before_train), which restores its running sum.
        self.gpa = GaussianPromptAggregation(self.learned_parameters(), self.max_epoch, c.GPA_MEAN, c.GPA_STD)
        if self.model.regularised:
            # Once per class set, on the training device, before the first step: never inside a training step.
            features = self.model.frozen_text_features()
            print(f"Frozen text features computed for {features.shape[0]} classes")
        super().before_train()

    def run_epoch(self):
        super().run_epoch()
        if self.gpa.end_epoch(self.epoch + 1):  # the last epoch: before its checkpoint is written and evaluated
            c = self.tcfg
            print(f"GPA: the prompts are the Gaussian-weighted average over the {self.max_epoch} epochs (mean "
                  f"{c.GPA_MEAN}, std {c.GPA_STD}; weights {', '.join(f'{w:.4g}' for w in self.gpa.weights)})")

