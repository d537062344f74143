"""Zero-shot CLIP with the dataset's hand-crafted template, or the template ensemble (CoOp's ZeroshotCLIP2)."""
from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode as CN

from .base import PromptTrainer
from .config import trainer_config
from .zsclip_model import TemplateCLIP


@trainer_config("ZSCLIP")
def zsclip_config():
    node = CN()
    node.TEMPLATES = "dataset"  # "dataset": the dataset's own template; "ensemble": CLIP's 7 + the dataset's
    node.PREC = "fp16"
    return node


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(PromptTrainer):
    CONFIG_KEY = "ZSCLIP"
    TEMPLATES = None  # a fixed choice overrides the config (ZeroshotCLIP2)

    def build_prompt_model(self, clip_model, classnames):
        templates = self.hand_crafted_templates(self.TEMPLATES or self.tcfg.TEMPLATES)
        print(f"Hand-crafted templates ({len(templates)}): {' | '.join(templates)}")
        return TemplateCLIP(clip_model, classnames, templates)

    def train(self):
        raise RuntimeError("ZeroshotCLIP learns nothing: run train.py with --eval-only.")


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(ZeroshotCLIP):
    """CoOp's name for the template-ensemble variant."""

    TEMPLATES = "ensemble"
