"""PromptSRC's model: IVLP's deep prompts, regularised towards the frozen CLIP, and Gaussian prompt aggregation
(no Dassl needed).

Khattak et al., "Self-regulating Prompts: Foundational Model Adaptation without Forgetting", ICCV 2023. What the
official code computes (muzairkhattak/PromptSRC, trainers/promptsrc.py: ``VLPromptLearner``, ``CustomCLIP.forward``,
``PromptSRC.forward_backward``), written here over IVLP's model (``ivlp_model.py``), whose prompts it uses unchanged:

- Prompted features: ``t_c = norm(g~(prompt_c))`` (IVLP's text side) and ``v = norm(f~(x))`` (IVLP's image side);
  ``logits = tau * v @ T^T``; ``L_ce = CE(logits, y)``.
- Frozen text features (textual diversity): ``t0_c = norm(mean_k g(template_k(name_c)))``, the frozen encoder's
  features of 60 templates averaged *before* they are normalised (the official code stores the mean of the raw
  ``encode_text`` outputs and normalises it in the forward pass). The templates are ``IMAGENET_TEMPLATES`` below, the
  same for every dataset. They are computed once per class set and neither learned nor saved.
- Frozen image features: ``v0 = norm(f(x))``, the image encoder without prompts, on the same (augmented) images;
  ``logits0 = tau * v0 @ T0^T``.
- ``L_SCL_text = TEXT_LOSS_WEIGHT * mean |T - T0|`` (``F.l1_loss``, mean over classes and dimensions).
- ``L_SCL_image = IMAGE_LOSS_WEIGHT * mean |V - V0|`` (mean over images and dimensions).
- ``L_SCL_logits = sum_{b,c} p0_bc (log p0_bc - log p_bc) / (B * C)`` with ``p = softmax(logits)`` and
  ``p0 = softmax(logits0)`` at temperature 1: ``KL(p0 || p)`` summed over the batch and divided by the number of
  logits (``F.kl_div(log p, log p0, reduction="sum", log_target=True) * 1 * 1 / logits.numel()``). The official
  code has no weight on it; ``LOGIT_LOSS_WEIGHT`` (default 1) is this toolbox's, so that all three can be set to 0.
- ``L = L_ce + L_SCL_text + L_SCL_image + LOGIT_LOSS_WEIGHT * L_SCL_logits``. With the three weights at 0 this is IVLP.
- Gaussian prompt aggregation (GPA): at the end of epoch ``e`` (1-based) the parameters are added to a running sum
  with weight ``w_e = N(e; GPA_MEAN, GPA_STD) / sum_j N(j; GPA_MEAN, GPA_STD)`` (the normal density at
  ``e = 1 .. MAX_EPOCH``, normalised to sum 1); after the last epoch the sum replaces the parameters, before the last
  checkpoint is written and the model evaluated (``GaussianPromptAggregation``; ``aggregation.gpa_weights``).

Differences from the official code that do not change the math: the official code keeps a second frozen CLIP (in
fp16) for ``v0``, here the image encoder runs once more without prompts (same weights); GPA averages the learned
parameters, where the official code averages the whole state dict (whose frozen entries the normalised weights
leave as they are); the GPA running sum is checkpointed, so a resumed run aggregates the same epochs.
"""
import math

import torch
import torch.nn.functional as F

from .encoders import clean_classnames, encode_images, encode_texts
from .ivlp_model import IVLPCLIP, benchmark_depths
from .registry import declare

# The templates of the frozen text features, for every dataset: IMAGENET_TEMPLATES of the official code
# (PromptSRC/trainers/imagenet_templates.py; its source is CLIP's Prompt_Engineering_for_ImageNet notebook).
IMAGENET_TEMPLATES = (
    "a photo of a {}.", "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.", "a photo of a clean {}.",
    "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.", "a photo of my {}.",
    "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.", "a black and white photo of the {}.",
    "a painting of the {}.", "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.",
    "a bright photo of the {}.", "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.",
    "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.",
    "a close-up photo of the {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.",
    "a doodle of the {}.", "a origami {}.", "a low resolution photo of a {}.", "the toy {}.",
    "a rendition of the {}.", "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.",
    "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.",
)

# FROZEN_TEMPLATES: "imagenet" (the official 60 above, for every dataset), or a dataset's own hand-crafted view:
# "ensemble" (its ensemble: CLIP's 7 + its template, or the embedded world's phrasings) or "dataset" (its template).
FROZEN_TEMPLATE_KINDS = ("imagenet", "ensemble", "dataset")


@torch.no_grad()
def frozen_text_features(clip_model, text_encoder, classnames, templates):
    """``[C, D]``: ``norm(mean_k g(template_k(name_c)))``, the raw features averaged over the templates, then
    normalised (as the official code; not the mean of normalised features that zero-shot CLIP uses)."""
    names = clean_classnames(classnames)
    total = 0
    for template in templates:
        total = total + encode_texts(clip_model, text_encoder, [template.format(name) for name in names]).float()
    return F.normalize(total / len(templates), dim=-1)


class PromptSRCCLIP(IVLPCLIP):
    """IVLP's prompts; ``training_loss`` adds the three self-consistency terms. Evaluation is IVLP's."""

    def __init__(self, clip_model, classnames, templates=IMAGENET_TEMPLATES, n_ctx_text=4, n_ctx_vision=4,
                 ctx_init="a photo of a", depth_text=9, depth_vision=9, text_loss_weight=25.0, image_loss_weight=10.0,
                 logit_loss_weight=1.0):
        super().__init__(clip_model, classnames, n_ctx_text, n_ctx_vision, ctx_init, depth_text, depth_vision)
        for name, value in (("TEXT_LOSS_WEIGHT", text_loss_weight), ("IMAGE_LOSS_WEIGHT", image_loss_weight),
                            ("LOGIT_LOSS_WEIGHT", logit_loss_weight)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be finite and >= 0 (0 switches the term off); got {value}")
        templates = tuple(templates)
        if not templates or any("{}" not in template for template in templates):
            raise ValueError(f"The frozen text features need templates, each with '{{}}' for the class name; got "
                             f"{templates!r}")
        self.templates = templates
        self.text_loss_weight = float(text_loss_weight)
        self.image_loss_weight = float(image_loss_weight)
        self.logit_loss_weight = float(logit_loss_weight)
        self._frozen_text = {}  # (class names, templates) -> [C, D]; not module state: never saved
        self.frozen_text_computed = 0  # how many times the frozen text features were computed (tests count it)

    @property
    def regularised(self):
        return self.text_loss_weight > 0 or self.image_loss_weight > 0 or self.logit_loss_weight > 0

    def frozen_text_features(self):
        """``[C, D]`` for the current class set: computed with the frozen text encoder on first use, then cached."""
        key = (tuple(self.classnames), self.templates)
        if key not in self._frozen_text:
            self._frozen_text[key] = frozen_text_features(self.clip, self.text_encoder, self.classnames, self.templates)
            self.frozen_text_computed += 1
        features = self._frozen_text[key]
        device = self.clip.token_embedding.weight.device
        return features if features.device == device else features.to(device)

    @torch.no_grad()
    def frozen_image_features(self, images):
        """``[B, D]``: the frozen image encoder's normalised features (no prompts)."""
        return F.normalize(encode_images(self.clip, images, self.reference_mode).float(), dim=-1)

    def training_loss(self, images, labels):
        image = self.encode_image(images)
        text = self.class_weights()
        logits = self.logits(image, text)
        loss_ce = F.cross_entropy(logits, labels)
        if not self.regularised:
            return loss_ce, logits, {}
        loss, extra = loss_ce, {"loss_ce": loss_ce.detach()}
        frozen_text = self.frozen_text_features()
        if self.text_loss_weight > 0:
            l1_text = F.l1_loss(text, frozen_text, reduction="mean")
            loss = loss + self.text_loss_weight * l1_text
            extra["l1_text"] = l1_text.detach()
        if self.image_loss_weight > 0 or self.logit_loss_weight > 0:
            frozen_image = self.frozen_image_features(images)
            if self.image_loss_weight > 0:
                l1_image = F.l1_loss(image, frozen_image, reduction="mean")
                loss = loss + self.image_loss_weight * l1_image
                extra["l1_image"] = l1_image.detach()
            if self.logit_loss_weight > 0:
                frozen_logits = self.logits(frozen_image, frozen_text)
                kl = F.kl_div(F.log_softmax(logits, dim=-1), F.log_softmax(frozen_logits, dim=-1), reduction="sum",
                              log_target=True) / logits.numel()
                loss = loss + self.logit_loss_weight * kl
                extra["kl_logits"] = kl.detach()
        return loss, logits, extra


def _promptsrc_config(protocol, dataset, shots):
    # The official configs (configs/trainers/PromptSRC/): base-to-new, cross-dataset (also used for domain
    # generalisation, with the same ImageNet model) and few-shot.
    if protocol in ("xd", "dg"):
        return "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets"
    if protocol == "fewshot":
        return "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"
    return "vit_b16_c2_ep20_batch4_4+4ctx"


def _promptsrc_benchmark(clip_model, classnames):
    depth_text, depth_vision = benchmark_depths(clip_model)
    return PromptSRCCLIP(clip_model, classnames, IMAGENET_TEMPLATES, 4, 4, "a photo of a", depth_text, depth_vision)


declare(name="PromptSRC", adapter="trainers.promptsrc", default_config=_promptsrc_config, order=50,
        benchmark_model=_promptsrc_benchmark)
