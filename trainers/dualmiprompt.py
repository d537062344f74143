"""DualMIPrompt: soft and hand-crafted prompts as two views of the text, tied by mutual information, plus a
class-wise visual augmentation (our reading of Zhang et al., "Generalizable Prompt Tuning for Vision-Language
Models", arXiv 2410.03189; see docs/method.md). The model lives in ``dualmiprompt_model.py``."""
from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode as CN

from .aggregation import AggregationCheckpoints, GaussianPromptAggregation
from .base import PromptTrainer
from .config import ConfigError, trainer_config
from .dualmiprompt_model import DualMIOptions, DualMIPromptCLIP


@trainer_config("DUALMIPROMPT")
def dualmiprompt_config():
    # The keys and defaults of DualMIOptions (documented there, one comment per option), plus the precision.
    node = CN(DualMIOptions.defaults())
    node.PREC = "fp16"  # fp16, fp32, amp or bf16 (fp16 and amp run as fp32 on the CPU)
    return node


@TRAINER_REGISTRY.register()
class DualMIPrompt(AggregationCheckpoints, PromptTrainer):
    CONFIG_KEY = "DUALMIPROMPT"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        try:
            self.options = DualMIOptions.from_node(cfg.TRAINER[self.CONFIG_KEY])
        except ValueError as err:
            raise ConfigError(f"TRAINER.{self.CONFIG_KEY}: {err}") from None

    def build_prompt_model(self, clip_model, classnames):
        options = self.options
        templates = self.hand_crafted_templates(options.templates)
        model = DualMIPromptCLIP(clip_model, classnames, templates, options)
        active = [name for name, weight in (("text MI", options.w_text_mi), ("visual MI", options.w_vis_mi)) if weight]
        print(f'Initial context: "{model.prompt_learner.prompt_prefix}" ({model.prompt_learner.n_ctx} tokens)')
        print(f"Hand-crafted templates ({len(templates)}): {' | '.join(templates)}")
        print(f"MI terms: {', '.join(active) or 'none (CoOp)'}; inference beta {options.infer_beta}")
        return model

    # ----- Gaussian aggregation of the context over epochs (GPA_MEAN > 0; checkpoints: AggregationCheckpoints) -----
    def before_train(self):
        options = self.options
        if options.gpa_mean > 0:  # before the resume (in Dassl's before_train), which restores its state
            self.gpa = GaussianPromptAggregation({"ctx": self.model.prompt_learner.ctx}, self.max_epoch,
                                                 options.gpa_mean, options.gpa_std)
        super().before_train()

    def run_epoch(self):
        super().run_epoch()
        if self.gpa is not None and self.gpa.end_epoch(self.epoch + 1):  # the last epoch: before its checkpoint
            print(f"GPA: the context is the Gaussian-weighted average over the epochs (mean {self.options.gpa_mean}, "
                  f"std {self.options.gpa_std})")

    def step_diagnostics(self):
        return self.model.context_gradient_norms()

    def log_epoch_averages(self):
        super().log_epoch_averages()
        meters = self.epoch_meter.meters
        for term, key, floor in (("dual-view", "kappa_text_at_floor", "KAPPA_FLOOR"),
                                 ("visual", "kappa_vis_at_floor", "VIS_KAPPA_FLOOR")):
            if key in meters and meters[key].avg > 0:
                print(f"WARNING: the {term} critic's temperature sat at its floor ({floor}) in "
                      f"{100 * meters[key].avg:.0f}% of this epoch's steps; its gradient is zero there. Lower the floor, "
                      "or fix the temperature (LEARN_KAPPA / VIS_LEARN_KAPPA False).")

    def build_model(self):
        super().build_model()
        if self.model.uses_hand_crafted_view:
            # Once per class set, on the training device, before the first step: never inside a training step.
            features = self.model.hand_crafted_features()
            print(f"Hand-crafted features computed for {features.shape[0]} classes")
