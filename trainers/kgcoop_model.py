"""KgCoOp's model: CoOp's learnable context, kept near the frozen hand-crafted class features (no Dassl needed).

Yao et al., "Visual-Language Prompt Tuning with Knowledge-guided Context Optimization", CVPR 2023; official code
github.com/htyao89/KgCoOp (``KgCoOp/trainers/kgcoop.py``).

- Learned ("soft") class features ``s_c = norm(g([SOS] V [name_c] . [EOS]))``: CoOp's prompts and context ``V``.
  They alone classify, in training and at test: ``logits = tau * norm(f(x)) @ S^T``.
- Hand-crafted ("knowledge") class features ``h_c = norm(g(template(name_c)))``: one template per dataset, through the
  frozen text encoder, computed once per class set, neither learned nor saved.
- ``L = CE(logits, y) + W * L_kg`` with ``L_kg = 1 - mean_c cos(s_c, h_c)``.

``L_kg`` is what the official code computes (``CustomCLIP.forward``): torch's ``CosineSimilarity(dim=1)`` between the
normalised learned and hand-crafted features of each class, averaged over the classes and subtracted from 1; its
trainer adds ``W * score`` to the cross-entropy, with ``W`` = ``TRAINER.COOP.W`` = 8.0 in every official script. For
unit vectors ``|s_c - h_c|^2 = 2 (1 - cos(s_c, h_c))``, so the mean squared Euclidean distance between the two
features is ``2 L_kg``: written that way, the same objective has weight ``W / 2``. The term is DualMIPrompt's
alignment term (``DualMIPromptCLIP.alignment``), reused here.
"""
import torch.nn.functional as F

from .coop_model import CoOpCLIP
from .dualmiprompt_model import DualMIPromptCLIP
from .encoders import TemplateFeatureCache
from .registry import declare

# The hand-crafted template of each dataset in the official code (CUSTOM_TEMPLATES in KgCoOp/trainers/kgcoop.py) is
# the dataset's own template here, except for DTD, where CoOp's zero-shot template is "{} texture." and KgCoOp's this.
TEMPLATE_OVERRIDES = {"DescribableTextures": "a photo of a {}, a type of texture."}


def knowledge_template(dataset_name, dataset_template):
    """The hand-crafted template KgCoOp uses for a dataset (``DATASET.NAME``) whose own template is given."""
    return TEMPLATE_OVERRIDES.get(dataset_name, dataset_template)


class KgCoOpCLIP(CoOpCLIP):
    """CoOp (``class_weights``, evaluation and checkpoints unchanged) whose training loss adds ``W * L_kg``."""

    def __init__(self, clip_model, classnames, template, n_ctx=4, ctx_init="a photo of a", csc=False, position="end",
                 w=8.0):
        super().__init__(clip_model, classnames, n_ctx, ctx_init, csc, position)
        if "{}" not in template:
            raise ValueError(f"The hand-crafted template must hold '{{}}' where the class name goes; got {template!r}")
        if not w >= 0:
            raise ValueError(f"W must be >= 0 (0 is CoOp); got {w}")
        self.template = template
        self.w = float(w)
        # Not module state: never saved, and rebuilt from the current class names.
        self.cache = TemplateFeatureCache()

    def hand_crafted_features(self):
        """``[C, D]`` normalised features of the template filled with each class name: computed with the frozen text
        encoder on first use, then taken from the cache."""
        features = self.cache.get(self.clip, self.text_encoder, self.classnames, (self.template,))
        device = self.clip.token_embedding.weight.device
        return features if features.device == device else features.to(device)

    def training_loss(self, images, labels):
        soft = self.class_weights()
        logits = self.logits(self.encode_image(images), soft)
        loss_ce = F.cross_entropy(logits, labels)
        # Logged at every weight; part of the loss (and of the graph) only when W > 0, so W = 0 is CoOp exactly.
        loss_kg = DualMIPromptCLIP.alignment(soft if self.w > 0 else soft.detach(), self.hand_crafted_features())
        loss = loss_ce + self.w * loss_kg if self.w > 0 else loss_ce
        return loss, logits, {"loss_ce": loss_ce.detach(), "loss_kg": loss_kg.detach()}


def _kgcoop_config(protocol, dataset, shots):
    # The official scripts (base2new_train.sh, xd_train.sh) run vit_b16_ep100_ctxv1 on every dataset, W 8.0.
    return "vit_b16_ep100_ctxv1"


def _kgcoop_benchmark(clip_model, classnames):
    from .templates import DEFAULT_TEMPLATE

    return KgCoOpCLIP(clip_model, classnames, DEFAULT_TEMPLATE)


declare(name="KgCoOp", adapter="trainers.kgcoop", default_config=_kgcoop_config, order=25,
        benchmark_model=_kgcoop_benchmark)
