"""CoCoOp's model: a context conditioned on each image by a small meta-network (no Dassl needed).

Zhou et al., "Conditional Prompt Learning for Vision-Language Models", CVPR 2022. For image ``x`` with
``z = norm(f(x))``: ``pi(z) = meta_net(z)``, context ``V(z) = V + pi(z)`` (the same bias added to every context
token), and ``logits[c] = tau * z . norm(g([SOS] V(z) [name_c] . [EOS]))``. Facts from the official code
(KaiyangZhou/CoOp, trainers/cocoop.py): ``meta_net = Linear(d, d // 16) - ReLU - Linear(d // 16, ctx_dim)`` with
``d`` the image feature size, fed with the normalised image features.

The official code builds the prompts of one image at a time and runs the text encoder once per image. Here the
prompts of all images are one ``[B, C, L, width]`` tensor (no loop over images), truncated after the longest EOT,
and the text encoder runs over ``B * C`` sequences at once. To bound memory when there are many classes, the
images are taken in chunks of ``max(1, sequence_budget // C)``, so one text-encoder call never holds more than
``max(sequence_budget, C)`` sequences; with the official training batch of 1 (or any ``B * C`` within the budget)
there is a single chunk.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoders import PromptedCLIP
from .prompts import ContextPrompts
from .registry import declare

DEFAULT_SEQUENCE_BUDGET = 10000


def build_meta_net(feature_dim, ctx_dim):
    if feature_dim < 16:
        raise ValueError(f"CoCoOp's meta-net needs image features of at least 16 dimensions; this CLIP has {feature_dim}.")
    hidden = feature_dim // 16
    return nn.Sequential(OrderedDict([
        ("linear1", nn.Linear(feature_dim, hidden)),
        ("relu", nn.ReLU()),
        ("linear2", nn.Linear(hidden, ctx_dim)),
    ]))


class CoCoOpCLIP(PromptedCLIP):
    image_independent = False  # the prompts depend on the image: class features are computed per image

    def __init__(self, clip_model, classnames, n_ctx=16, ctx_init="", sequence_budget=DEFAULT_SEQUENCE_BUDGET):
        super().__init__(clip_model)
        if sequence_budget < 1:
            raise ValueError(f"SEQUENCE_BUDGET must be a positive number of text sequences; got {sequence_budget}.")
        self.prompt_learner = ContextPrompts(clip_model, classnames, n_ctx, ctx_init)
        feature_dim = clip_model.text_projection.shape[1]  # the joint embedding size (visual.output_dim)
        ctx_dim = clip_model.ln_final.weight.shape[0]
        self.meta_net = build_meta_net(feature_dim, ctx_dim)
        self.sequence_budget = sequence_budget

    def class_weights(self):
        raise RuntimeError("CoCoOp's class features depend on the image: call the model on images instead.")

    def conditioned_context(self, image_features):
        """``V + meta_net(z)`` for each image: ``[B, n_ctx, ctx_dim]``."""
        bias = self.meta_net(image_features)
        return self.prompt_learner.ctx + bias.unsqueeze(1)

    def images_per_chunk(self):
        return max(1, self.sequence_budget // self.prompt_learner.n_classes)

    def batched_logits(self, image_features, context):
        learner = self.prompt_learner
        prompts = learner.assemble(context.unsqueeze(1))  # [B, C, L, width]
        images, classes = prompts.shape[:2]
        features = self.text_encoder(prompts.flatten(0, 1), learner.eot_index.repeat(images))
        features = F.normalize(features.float(), dim=-1).view(images, classes, -1)
        return self.logit_scale * torch.einsum("bd,bcd->bc", image_features, features)

    def per_image_logits(self, image_features, context):
        """The official computation: one text-encoder call per image over full 77-token prompts."""
        learner = self.prompt_learner
        rows = []
        for feature, ctx in zip(image_features, context):
            text = self.encode_prompts(learner.assemble(ctx), learner.eot_index, learner)
            rows.append(self.logit_scale * feature @ F.normalize(text.float(), dim=-1).t())
        return torch.stack(rows)

    def forward(self, images):
        image_features = self.encode_image(images)
        context = self.conditioned_context(image_features)
        if self.reference_mode:
            return self.per_image_logits(image_features, context)
        step = self.images_per_chunk()
        return torch.cat([
            self.batched_logits(features, ctx)
            for features, ctx in zip(image_features.split(step), context.split(step))
        ])


def _cocoop_benchmark(clip_model, classnames):
    return CoCoOpCLIP(clip_model, classnames, n_ctx=4, ctx_init="a photo of a")


# The official config serves base-to-new and cross-dataset alike.
declare(name="CoCoOp", adapter="trainers.cocoop", default_config=lambda protocol, dataset, shots:
        "vit_b16_c4_ep10_batch1_ctxv1", order=30, benchmark_model=_cocoop_benchmark)
