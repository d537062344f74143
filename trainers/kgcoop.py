"""KgCoOp: CoOp's context plus ``W * (1 - mean_c cos(s_c, h_c))``, which keeps the learned class features near the
hand-crafted ones of the dataset's template.

Yao et al., "Visual-Language Prompt Tuning with Knowledge-guided Context Optimization", CVPR 2023. The model lives in
``kgcoop_model.py``. The official code keeps these keys in ``TRAINER.COOP`` (W included); here they have their own
node, ``TRAINER.KGCOOP``, whose defaults are the values the official scripts run with (its train.py's own defaults,
N_CTX 16, CTX_INIT False and W 1.0, are always overridden by the scripts and the config).
"""
from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode as CN

from .base import PromptTrainer
from .config import ConfigError, trainer_config
from .kgcoop_model import KgCoOpCLIP, knowledge_template


@trainer_config("KGCOOP")
def kgcoop_config():
    node = CN()
    node.N_CTX = 4  # number of context tokens (ignored when CTX_INIT gives the words)
    node.CTX_INIT = "a photo of a"  # words whose embeddings initialise the context ("": random N(0, 0.02))
    node.CSC = False  # class-specific context
    node.CLASS_TOKEN_POSITION = "end"  # end, middle or front
    node.PREC = "fp16"  # fp16, fp32, amp or bf16 (fp16 and amp run as fp32 on the CPU)
    node.W = 8.0  # weight of 1 - mean_c cos(learned_c, hand-crafted_c); 0 is CoOp
    return node


@TRAINER_REGISTRY.register()
class KgCoOp(PromptTrainer):
    CONFIG_KEY = "KGCOOP"

    def check_cfg(self, cfg):
        super().check_cfg(cfg)
        if not cfg.TRAINER[self.CONFIG_KEY].W >= 0:
            raise ConfigError(f"TRAINER.{self.CONFIG_KEY}.W must be >= 0 (0 is CoOp); got {cfg.TRAINER[self.CONFIG_KEY].W}")

    def build_prompt_model(self, clip_model, classnames):
        c = self.tcfg
        (dataset_template,) = self.hand_crafted_templates("dataset")
        template = knowledge_template(self.cfg.DATASET.NAME, dataset_template)
        model = KgCoOpCLIP(clip_model, classnames, template, c.N_CTX, c.CTX_INIT, c.CSC, c.CLASS_TOKEN_POSITION, c.W)
        print(f'Initial context: "{model.prompt_learner.prompt_prefix}" ({model.prompt_learner.n_ctx} tokens)')
        print(f'Hand-crafted template: "{template}"; W {model.w}')
        return model

    def build_model(self):
        super().build_model()
        # Once per class set, on the training device, before the first step: never inside a training step.
        features = self.model.hand_crafted_features()
        print(f"Hand-crafted features computed for {features.shape[0]} classes")
