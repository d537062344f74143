"""Zero-shot CLIP's model: class weights from hand-crafted templates, computed once (no Dassl needed)."""
from .encoders import PromptedCLIP, TemplateFeatureCache


class TemplateCLIP(PromptedCLIP):
    def __init__(self, clip_model, classnames, templates):
        super().__init__(clip_model)
        self.cache = TemplateFeatureCache()
        self.classnames = list(classnames)
        self.templates = tuple(templates)

    def class_weights(self):
        return self.cache.get(self.clip, self.text_encoder, self.classnames, self.templates)
