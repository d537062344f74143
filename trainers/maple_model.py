"""MaPLe's model: coupled deep prompts in the text and image encoders of a frozen CLIP (no Dassl needed).

Khattak et al., "MaPLe: Multi-modal Prompt Learning", CVPR 2023. Facts from the official code
(muzairkhattak/multimodal-prompt-learning, trainers/maple.py and clip/model.py), reproduced here with the
project's shared encoders instead of a forked CLIP:

- Layer 0, text: learned context ``V`` of ``N_CTX`` tokens after [SOS]. With ``CTX_INIT`` and ``N_CTX <= 4`` it is
  initialised from the first ``N_CTX`` token embeddings of ``CTX_INIT`` while the prompt text keeps every word
  ("a photo of a" with 2 tokens: ``[SOS] V_1 V_2 of a [name] . [EOS]``); otherwise N(0, 0.02) and "X X ...".
- Layer 0, image: ``P_0 = proj_0(V)`` (a linear map from the text width to the vision width), appended after the
  class and patch tokens, after the positional embedding and before ``ln_pre``.
- Deeper layers ``k = 1 .. PROMPT_DEPTH - 1``: learned text prompts ``T_k`` (N(0, 0.02)) replace tokens
  ``1 .. N_CTX`` of the text sequence before block ``k``, and ``proj_k(T_k)`` replaces the last ``N_CTX`` tokens of
  the image sequence before block ``k``. The ``proj_k`` are copies of one linear map (identical initial weights);
  ``proj_0`` is initialised on its own. Blocks from ``PROMPT_DEPTH`` on carry the previous block's outputs.

Differences from the official code that do not change the math: the learned parameters (and so the projections)
stay in fp32 while the frozen CLIP may run in fp16 / bf16 (the official code keeps ``proj_0`` in fp16); the text
encoder stops after the longest EOT (exact: it is causal); widths come from the CLIP model (the official code
hard-codes 512 and 768, i.e. ViT-B only).
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoders import PromptedCLIP, encode_prompted_images, require_vit
from .prompts import ContextPrompts
from .registry import declare

# The official code initialises the context from CTX_INIT only for up to this many tokens (trainers/maple.py).
MAX_CTX_FROM_INIT = 4


def replace_tokens(x, start, prompts):
    """Sequence-first ``x`` ``[L, N, width]`` with tokens ``start .. start + n`` replaced by ``prompts [n, width]``."""
    block = prompts.to(x.dtype).unsqueeze(1).expand(-1, x.shape[1], -1)
    return torch.cat([x[:start], block, x[start + prompts.shape[0]:]], dim=0)


class MaPLeCLIP(PromptedCLIP):
    def __init__(self, clip_model, classnames, n_ctx=2, ctx_init="a photo of a", prompt_depth=9):
        super().__init__(clip_model)
        width = require_vit(clip_model.visual)
        depth_limit = min(len(clip_model.transformer.resblocks), len(clip_model.visual.transformer.resblocks))
        if not 1 <= prompt_depth <= depth_limit:
            raise ValueError(
                f"PROMPT_DEPTH must be between 1 (prompts at the input only) and {depth_limit} (the number of "
                f"transformer layers of this CLIP); got {prompt_depth}."
            )
        if n_ctx < 1:
            raise ValueError(f"N_CTX must be at least 1; got {n_ctx}.")
        self.prompt_depth = prompt_depth
        init_words = ctx_init if ctx_init and n_ctx <= MAX_CTX_FROM_INIT else ""
        self.prompt_learner = ContextPrompts(clip_model, classnames, n_ctx, init_words, n_ctx_from_init=False)
        ctx_dim = clip_model.ln_final.weight.shape[0]
        # Creation order as in the official code: proj_0, the deeper text prompts, then the deeper projections.
        self.visual_projection = nn.Linear(ctx_dim, width)
        deep_prompts = [torch.empty(n_ctx, ctx_dim) for _ in range(prompt_depth - 1)]
        for prompt in deep_prompts:
            nn.init.normal_(prompt, std=0.02)
        self.deep_text_prompts = nn.ParameterList([nn.Parameter(prompt) for prompt in deep_prompts])
        template = nn.Linear(ctx_dim, width)
        self.deep_visual_projections = nn.ModuleList([copy.deepcopy(template) for _ in range(prompt_depth - 1)])

    @property
    def n_ctx(self):
        return self.prompt_learner.n_ctx

    def visual_prompts(self):
        """``(P_0, [P_1 .. P_{depth-1}])``: the image-side prompts, each the projection of its text prompt."""
        first = self.visual_projection(self.prompt_learner.ctx)
        deep = [proj(prompt) for proj, prompt in zip(self.deep_visual_projections, self.deep_text_prompts)]
        return first, deep

    def text_layer_hook(self, layer, x):
        if 1 <= layer < self.prompt_depth:
            return replace_tokens(x, 1, self.deep_text_prompts[layer - 1])
        return x

    def class_weights(self):
        return self.prompt_features()

    def encode_image(self, images):
        first, deep = self.visual_prompts()

        def image_layer_hook(layer, x):
            if 1 <= layer < self.prompt_depth:
                return replace_tokens(x, x.shape[0] - self.n_ctx, deep[layer - 1])
            return x

        features = encode_prompted_images(self.clip.visual, images, first, image_layer_hook,
                                          reference=self.reference_mode)
        return F.normalize(features.float(), dim=-1)


def _maple_config(protocol, dataset, shots):
    return "vit_b16_c2_ep5_batch4_2ctx_cross_datasets" if protocol in ("xd", "dg") else "vit_b16_c2_ep5_batch4_2ctx"


def _maple_benchmark(clip_model, classnames):
    # The official depth 9 assumes 12 layers; a smaller CLIP (--quick) gets as many as it has.
    depth = min(9, len(clip_model.transformer.resblocks), len(clip_model.visual.transformer.resblocks))
    return MaPLeCLIP(clip_model, classnames, n_ctx=2, ctx_init="a photo of a", prompt_depth=depth)


declare(name="MaPLe", adapter="trainers.maple", default_config=_maple_config, order=40,
        benchmark_model=_maple_benchmark)
