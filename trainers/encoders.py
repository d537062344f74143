"""CLIP's text and image encoders driven with prompt embeddings, written once for every trainer.

The text transformer is causal: a token never sees the tokens after it, so everything after the last
end-of-text (EOT) token of a batch of prompts cannot change any class feature. ``TextEncoder`` therefore runs
only ``max(eot) + 1`` positions, which is exact and several times cheaper than CLIP's fixed 77.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def run_block(block, x, attn_mask=None):
    """One residual attention block of CLIP (sequence-first ``x``), with an explicit mask of matching size."""
    h = block.ln_1(x)
    if attn_mask is not None:
        attn_mask = attn_mask.to(dtype=h.dtype, device=h.device)
    x = x + block.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
    return x + block.mlp(block.ln_2(x))


def causal_mask(length):
    return torch.full((length, length), float("-inf")).triu_(1)


_tokenizer = None


def tokenizer():
    global _tokenizer
    if _tokenizer is None:
        from clip.simple_tokenizer import SimpleTokenizer

        _tokenizer = SimpleTokenizer()
    return _tokenizer


def tokenize(texts, context_length=77):
    from clip import clip

    return clip.tokenize(texts, context_length=context_length)


def clean_classnames(classnames):
    # Class names in the split files use underscores for spaces (e.g. "great_pyrenees").
    return [name.replace("_", " ") for name in classnames]


def name_token_counts(classnames):
    return [len(tokenizer().encode(name)) for name in classnames]


def eot_positions(tokens):
    # EOT has the largest id of the vocabulary, so its position is the argmax of each row.
    return tokens.argmax(dim=-1)


class TextEncoder(nn.Module):
    """CLIP's text transformer applied to prompt embeddings ``[N, L, width]``.

    ``layer_hook(i, x)``, when given, may replace tokens of the sequence-first activations ``x`` before block
    ``i`` runs (deep prompts). ``truncate=False`` runs all ``L`` positions (the reference computation).
    """

    def __init__(self, clip_model):
        super().__init__()
        self.blocks = clip_model.transformer.resblocks
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("mask", causal_mask(clip_model.context_length), persistent=False)

    @property
    def dtype(self):
        return self.text_projection.dtype

    def forward(self, prompts, eot_index, layer_hook=None, truncate=True):
        length = int(eot_index.max()) + 1 if truncate else prompts.shape[1]
        x = prompts[:, :length].to(self.dtype) + self.positional_embedding[:length].to(self.dtype)
        x = x.permute(1, 0, 2)
        mask = self.mask[:length, :length]
        for i, block in enumerate(self.blocks):
            if layer_hook is not None:
                x = layer_hook(i, x)
            x = run_block(block, x, mask)
        x = self.ln_final(x.permute(1, 0, 2))
        rows = torch.arange(x.shape[0], device=x.device)
        return x[rows, eot_index.to(x.device)] @ self.text_projection


def encode_texts(clip_model, text_encoder, texts):
    """Features (not normalised) of plain sentences, e.g. filled templates."""
    tokens = tokenize(texts).to(clip_model.token_embedding.weight.device)
    embeddings = clip_model.token_embedding(tokens)
    return text_encoder(embeddings, eot_positions(tokens))


@torch.no_grad()
def template_features(clip_model, text_encoder, classnames, templates):
    """``h_c = norm(mean_k norm(g(template_k(name_c))))``: hand-crafted class features, ``[C, D]``."""
    names = clean_classnames(classnames)
    total = 0
    for template in templates:
        feats = encode_texts(clip_model, text_encoder, [template.format(name) for name in names])
        total = total + F.normalize(feats.float(), dim=-1)
    return F.normalize(total / len(templates), dim=-1)


class TemplateFeatureCache:
    """Hand-crafted features computed once per (class set, templates) and reused after that."""

    def __init__(self):
        self._features = {}
        self.computed = 0  # how many times the text encoder actually ran (tests count it)

    def get(self, clip_model, text_encoder, classnames, templates):
        key = (tuple(classnames), tuple(templates))
        if key not in self._features:
            self._features[key] = template_features(clip_model, text_encoder, classnames, templates)
            self.computed += 1
        return self._features[key]


def encode_images(clip_model, images):
    """Image features (not normalised) from the frozen image encoder, in the encoder's dtype."""
    visual = clip_model.visual
    return visual(images.to(visual.conv1.weight.dtype))


def require_vit(visual):
    """The width of a ViT image encoder; a clear error for the ResNet ones, which have no tokens to prompt."""
    if not hasattr(visual, "transformer") or not hasattr(visual, "class_embedding"):
        raise ValueError(
            f"Visual prompts need a ViT image encoder; this CLIP's is {type(visual).__name__}. "
            "Choose a ViT backbone (e.g. MODEL.BACKBONE.NAME ViT-B/16)."
        )
    return visual.conv1.out_channels


def encode_prompted_images(visual, images, prompts=None, layer_hook=None):
    """CLIP's ``VisionTransformer`` with prompt tokens appended after the patch tokens (any ViT width).

    ``prompts`` (``[n, width]``, shared by the images) are appended after the class and patch tokens, once the
    positional embedding is added and before ``ln_pre``, so the sequence is ``[CLS] patches prompts``.
    ``layer_hook(i, x)``, when given, may replace tokens of the sequence-first activations ``x`` (``[L, B, width]``)
    before block ``i`` runs (deep prompts). Without prompts and hook this is exactly ``visual(images)``.
    """
    require_vit(visual)
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    x = x.flatten(2).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    if prompts is not None:
        x = torch.cat([x, prompts.to(x.dtype).expand(x.shape[0], -1, -1)], dim=1)
    x = visual.ln_pre(x).permute(1, 0, 2)
    for i, block in enumerate(visual.transformer.resblocks):
        if layer_hook is not None:
            x = layer_hook(i, x)
        x = run_block(block, x)
    x = visual.ln_post(x[0])
    return x @ visual.proj if visual.proj is not None else x


class PromptedCLIP(nn.Module):
    """Frozen CLIP plus the learnable parts a trainer adds (its other submodules).

    CLIP's weights never get gradients and CLIP stays in eval mode even while the learnable parts train (so the
    ResNet backbones keep their BatchNorm statistics). Subclasses set ``image_independent`` to say whether the
    class weights can be computed once per evaluation, and implement ``class_weights``.
    """

    image_independent = True

    # The reference computation (what the official code does): full 77-token prompts, and in subclasses any
    # per-image loop they replace with a batched form. Used by tests and the benchmark to check and time ours.
    reference_mode = False

    def __init__(self, clip_model):
        super().__init__()
        clip_model.requires_grad_(False)
        self.clip = clip_model
        self.text_encoder = TextEncoder(clip_model)

    def train(self, mode=True):
        super().train(mode)
        self.clip.eval()
        return self

    @property
    def logit_scale(self):
        return self.clip.logit_scale.exp().float()

    def encode_image(self, images):
        return F.normalize(encode_images(self.clip, images).float(), dim=-1)

    def class_weights(self):
        """Normalised class weights ``[C, D]`` (for image-independent prompts)."""
        raise NotImplementedError

    def logits(self, image_features, weights):
        return self.logit_scale * image_features @ weights.t()

    def forward(self, images):
        return self.logits(self.encode_image(images), self.class_weights())

    def training_loss(self, images, labels):
        """``(loss, logits, extra)``: the training objective; ``extra`` holds named scalars to log."""
        logits = self(images)
        return F.cross_entropy(logits, labels), logits, {}

    def encode_prompts(self, prompts, eot_index, prompt_module, **kwargs):
        """Features of prompt embeddings, through the reference path (padded to 77, no truncation) if asked."""
        if self.reference_mode:
            return self.text_encoder(prompt_module.full_length(prompts), eot_index, truncate=False, **kwargs)
        return self.text_encoder(prompts, eot_index, **kwargs)

    def class_specific_parameters(self):
        """Names of learned parameters whose first dimension is the number of classes."""
        return ()
