"""IVLP's model: independent deep prompts in the text and image encoders of a frozen CLIP (no Dassl needed).

Independent vision-language prompting, the baseline of Khattak et al., "Self-regulating Prompts: Foundational Model
Adaptation without Forgetting" (PromptSRC), ICCV 2023. What the official code computes (muzairkhattak/PromptSRC:
trainers/independentVL.py for the prompt learner and the loss, clip/model.py ``ResidualAttentionBlock_IVLP`` and
``VisionTransformer`` for where the prompts go), reproduced with the project's shared encoders instead of a forked
CLIP:

- Text, layer 0: learned context ``V`` of ``N_CTX_TEXT`` tokens right after [SOS]. With ``CTX_INIT`` and
  ``N_CTX_TEXT <= 4`` it starts as the first ``N_CTX_TEXT`` token embeddings of ``CTX_INIT`` and the prompt text keeps
  every word ("a photo of a" with 4 tokens: ``[SOS] V_1 .. V_4 [name] . [EOS]``); otherwise N(0, 0.02) and "X X ..".
- Text, blocks ``k = 1 .. PROMPT_DEPTH_TEXT - 1``: learned ``T_k`` (N(0, 0.02)) replace tokens ``1 .. N_CTX_TEXT``
  of the sequence before block ``k`` runs.
- Image, layer 0 (when ``PROMPT_DEPTH_VISION >= 1``): learned ``P_0`` (``N_CTX_VISION`` tokens, N(0, 0.02)) appended
  after the class and patch tokens, once the positional embedding is added and before ``ln_pre``.
- Image, blocks ``k = 1 .. PROMPT_DEPTH_VISION - 1``: learned ``P_k`` (N(0, 0.02)) replace the last ``N_CTX_VISION``
  tokens before block ``k`` runs. ``PROMPT_DEPTH_VISION = 0`` leaves the image encoder as it is.
- No coupling between the two sides (unlike MaPLe, whose image prompts are projections of the text prompts).
  ``logits = tau * norm(f~(x)) @ norm(g~(prompt_c))^T``, trained with cross-entropy.

The placement is MaPLe's (``maple_model.replace_tokens``, ``encoders.encode_prompted_images``); only the source of
the prompts differs. Differences from the official code that do not change the math: learned parameters stay in fp32
(the official code casts the prompts to fp16 inside each block); the text encoder stops after the longest EOT (exact:
it is causal); widths come from the CLIP model.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoders import PromptedCLIP, encode_prompted_images, require_vit
from .maple_model import MAX_CTX_FROM_INIT, replace_tokens
from .prompts import ContextPrompts
from .registry import declare

OFFICIAL_DEPTH = 9  # both encoders, in the official base-to-new configs (of ViT-B/16's 12 layers)


def normal_prompts(count, n_ctx, width):
    """``count`` learned prompt tensors ``[n_ctx, width]`` drawn from N(0, 0.02), as the official code does."""
    prompts = [torch.empty(n_ctx, width) for _ in range(count)]
    for prompt in prompts:
        nn.init.normal_(prompt, std=0.02)
    return nn.ParameterList([nn.Parameter(prompt) for prompt in prompts])


class IVLPCLIP(PromptedCLIP):
    def __init__(self, clip_model, classnames, n_ctx_text=4, n_ctx_vision=4, ctx_init="a photo of a", depth_text=9,
                 depth_vision=9):
        super().__init__(clip_model)
        vision_width = require_vit(clip_model.visual)
        text_layers = len(clip_model.transformer.resblocks)
        vision_layers = len(clip_model.visual.transformer.resblocks)
        if not 1 <= depth_text <= text_layers:
            raise ValueError(f"PROMPT_DEPTH_TEXT must be between 1 (the context at the input only) and {text_layers} "
                             f"(the text encoder's layers); got {depth_text}.")
        if not 0 <= depth_vision <= vision_layers:
            raise ValueError(f"PROMPT_DEPTH_VISION must be between 0 (no visual prompts) and {vision_layers} (the image "
                             f"encoder's layers); got {depth_vision}.")
        if n_ctx_text < 1:
            raise ValueError(f"N_CTX_TEXT must be at least 1; got {n_ctx_text}.")
        if depth_vision > 0 and n_ctx_vision < 1:
            raise ValueError(f"N_CTX_VISION must be at least 1 when PROMPT_DEPTH_VISION > 0; got {n_ctx_vision}.")
        self.depth_text, self.depth_vision = depth_text, depth_vision
        self.n_ctx_vision = n_ctx_vision if depth_vision > 0 else 0
        self.classnames = list(classnames)
        init_words = ctx_init if ctx_init and n_ctx_text <= MAX_CTX_FROM_INIT else ""
        self.prompt_learner = ContextPrompts(clip_model, classnames, n_ctx_text, init_words, n_ctx_from_init=False)
        text_width = clip_model.ln_final.weight.shape[0]
        self.deep_text_prompts = normal_prompts(depth_text - 1, n_ctx_text, text_width)
        self.visual_ctx = normal_prompts(1, n_ctx_vision, vision_width)[0] if depth_vision > 0 else None
        self.deep_visual_prompts = normal_prompts(max(depth_vision - 1, 0), n_ctx_vision, vision_width)

    @property
    def n_ctx_text(self):
        return self.prompt_learner.n_ctx

    def set_classnames(self, classnames):
        self.prompt_learner.set_classnames(classnames)
        self.classnames = list(classnames)

    def text_layer_hook(self, layer, x):
        if 1 <= layer < self.depth_text:
            return replace_tokens(x, 1, self.deep_text_prompts[layer - 1])
        return x

    def image_layer_hook(self, layer, x):
        if 1 <= layer < self.depth_vision:
            return replace_tokens(x, x.shape[0] - self.n_ctx_vision, self.deep_visual_prompts[layer - 1])
        return x

    def class_weights(self):
        return self.prompt_features()

    def encode_image(self, images):
        features = encode_prompted_images(self.clip.visual, images, self.visual_ctx,
                                          self.image_layer_hook if self.depth_vision > 1 else None,
                                          reference=self.reference_mode)
        return F.normalize(features.float(), dim=-1)


def _ivlp_config(protocol, dataset, shots):
    # The official code has one IVLP config (configs/trainers/IVLP/), run by its base-to-new scripts.
    return "vit_b16_c2_ep20_batch4_4+4ctx"


def benchmark_depths(clip_model):
    """The official depth 9 in both encoders, or as many layers as a smaller CLIP has (--quick)."""
    return (min(OFFICIAL_DEPTH, len(clip_model.transformer.resblocks)),
            min(OFFICIAL_DEPTH, len(clip_model.visual.transformer.resblocks)))


def _ivlp_benchmark(clip_model, classnames):
    depth_text, depth_vision = benchmark_depths(clip_model)
    return IVLPCLIP(clip_model, classnames, 4, 4, "a photo of a", depth_text, depth_vision)


declare(name="IVLP", adapter="trainers.ivlp", default_config=_ivlp_config, order=45, benchmark_model=_ivlp_benchmark)
