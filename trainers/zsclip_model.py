"""Zero-shot CLIP's model: class weights from hand-crafted templates, computed once (no Dassl needed)."""
from .encoders import PromptedCLIP, TemplateFeatureCache
from .registry import declare


class TemplateCLIP(PromptedCLIP):
    def __init__(self, clip_model, classnames, templates):
        super().__init__(clip_model)
        self.cache = TemplateFeatureCache()
        self.classnames = list(classnames)
        self.templates = tuple(templates)

    def class_weights(self):
        return self.cache.get(self.clip, self.text_encoder, self.classnames, self.templates)


def _zero_shot_config(protocol, dataset, shots):
    return "vit_b16"


declare(name="ZeroshotCLIP", adapter="trainers.zsclip", default_config=_zero_shot_config, order=10, learns=False)
# CoOp's name for the template-ensemble variant; it shares ZeroshotCLIP's configs and is not in the suite.
declare(name="ZeroshotCLIP2", adapter="trainers.zsclip", default_config=_zero_shot_config, order=11, learns=False,
        config_folder="ZeroshotCLIP", in_suite=False)
