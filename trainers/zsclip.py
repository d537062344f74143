"""Zero-shot CLIP with the dataset's hand-crafted template, or the template ensemble (CoOp's ZeroshotCLIP2)."""
from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode as CN

from .base import PromptTrainer
from .config import trainer_config
from .encoders import PromptedCLIP, TemplateFeatureCache
from .templates import select_templates


@trainer_config("ZSCLIP")
def zsclip_config():
    node = CN()
    node.TEMPLATES = "dataset"  # "dataset": the dataset's own template; "ensemble": CLIP's 7 + the dataset's
    node.PREC = "fp16"
    return node


class TemplateCLIP(PromptedCLIP):
    def __init__(self, clip_model, classnames, templates):
        super().__init__(clip_model)
        self.cache = TemplateFeatureCache()
        self.classnames = list(classnames)
        self.templates = tuple(templates)

    def class_weights(self):
        return self.cache.get(self.clip, self.text_encoder, self.classnames, self.templates)


@TRAINER_REGISTRY.register()
class ZeroshotCLIP(PromptTrainer):
    CONFIG_KEY = "ZSCLIP"
    TEMPLATES = None  # a fixed choice overrides the config (ZeroshotCLIP2)

    def build_prompt_model(self, clip_model, classnames):
        dataset = self.dm.dataset
        templates = select_templates(
            self.TEMPLATES or self.tcfg.TEMPLATES,
            self.dataset_template,
            getattr(dataset, "ensemble_adds_template", True),
        )
        print(f"Hand-crafted templates ({len(templates)}): {' | '.join(templates)}")
        return TemplateCLIP(clip_model, classnames, templates)

    def train(self):
        raise RuntimeError("ZeroshotCLIP learns nothing: run train.py with --eval-only.")


@TRAINER_REGISTRY.register()
class ZeroshotCLIP2(ZeroshotCLIP):
    """CoOp's name for the template-ensemble variant."""

    TEMPLATES = "ensemble"
