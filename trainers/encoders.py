"""CLIP's text and image encoders driven with prompt embeddings, written once for every trainer.

The text transformer is causal: a token never sees the tokens after it, so everything after the last
end-of-text (EOT) token of a batch of prompts cannot change any class feature. ``TextEncoder`` therefore runs
only ``max(eot) + 1`` positions, which is exact and several times cheaper than CLIP's fixed 77.
"""
import hashlib

import torch
import torch.nn as nn
import torch.nn.functional as F

# CLIP's activation is QuickGELU, ``z * sigmoid(1.702 z)``, which equals ``silu(1.702 z) / 1.702``.
QUICK_GELU_SCALE = 1.702


def run_block(block, x, attn_mask=None, reference=False):
    """One residual attention block of CLIP (sequence-first ``x``), with an explicit mask of matching size.

    ``reference=True`` computes it with CLIP's own modules (``nn.MultiheadAttention``, ``QuickGELU``), as the
    official code does. The default computes the same function in fewer passes over memory (see ``fused_mlp`` and
    ``fused_attention``); the two agree to float rounding (tests/test_encoders.py).
    """
    h = block.ln_1(x)
    if attn_mask is not None:
        attn_mask = attn_mask.to(dtype=h.dtype, device=h.device)
    if reference or type(block.mlp.gelu).__name__ != "QuickGELU":
        x = x + block.attn(h, h, h, need_weights=False, attn_mask=attn_mask)[0]
        return x + block.mlp(block.ln_2(x))
    x = x + fused_attention(block.attn, h, attn_mask)
    return x + fused_mlp(block.mlp, block.ln_2(x))


def fused_attention(attn, x, attn_mask=None):
    """``nn.MultiheadAttention(x, x, x)`` for sequence-first ``x`` without its layout copies: the heads are strided
    views of one input projection, handed to ``scaled_dot_product_attention`` as they are."""
    length, batch, width = x.shape
    heads = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias).view(length, batch, 3, heads, width // heads)
    q, k, v = qkv.permute(2, 1, 3, 0, 4).unbind(0)  # each [batch, heads, length, head width]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    out = out.permute(2, 0, 1, 3).reshape(length, batch, width)
    return F.linear(out, attn.out_proj.weight, attn.out_proj.bias)


def fused_mlp(mlp, x):
    """``c_proj(QuickGELU(c_fc(x)))`` as ``c_proj(silu(1.702 c_fc(x))) / 1.702``: both scalings ride on the
    matrix multiplies (``addmm``'s alpha and beta), so the activation is one pass instead of three (multiply,
    sigmoid, multiply), done in place when no gradient needs its input (the frozen image encoder)."""
    shape = x.shape
    c_fc, c_proj = mlp.c_fc, mlp.c_proj
    h = torch.addmm(c_fc.bias, x.reshape(-1, shape[-1]), c_fc.weight.t(), beta=QUICK_GELU_SCALE,
                    alpha=QUICK_GELU_SCALE)
    h = F.silu(h, inplace=not h.requires_grad)
    out = torch.addmm(c_proj.bias, h, c_proj.weight.t(), alpha=1 / QUICK_GELU_SCALE)
    return out.view(*shape[:-1], out.shape[-1])


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
    ``i`` runs (deep prompts). ``reference=True`` is the official computation: all ``L`` positions, through
    CLIP's own block modules. ``fused=False`` keeps CLIP's own block modules with the truncation (the small world
    CLIP was pretrained that way; its script keeps it so that the shipped weights regenerate bit for bit).
    """

    def __init__(self, clip_model, fused=True):
        super().__init__()
        self.fused = fused
        self.blocks = clip_model.transformer.resblocks
        self.positional_embedding = clip_model.positional_embedding
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.register_buffer("mask", causal_mask(clip_model.context_length), persistent=False)

    @property
    def dtype(self):
        return self.text_projection.dtype

    def forward(self, prompts, eot_index, layer_hook=None, reference=False):
        length = prompts.shape[1] if reference else int(eot_index.max()) + 1
        x = prompts[:, :length].to(self.dtype) + self.positional_embedding[:length].to(self.dtype)
        x = x.permute(1, 0, 2)
        mask = self.mask[:length, :length]
        for i, block in enumerate(self.blocks):
            if layer_hook is not None:
                x = layer_hook(i, x)
            x = run_block(block, x, mask, reference=reference or not self.fused)
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


def encode_images(clip_model, images, reference=False):
    """Image features (not normalised) from the frozen image encoder, in the encoder's dtype: CLIP's own forward
    for ``reference`` and the ResNets, our blocks (the same function, fewer memory passes) for a ViT."""
    visual = clip_model.visual
    if reference or not is_vit(visual):
        return visual(images.to(visual.conv1.weight.dtype))
    return encode_prompted_images(visual, images)


def is_vit(visual):
    return hasattr(visual, "transformer") and hasattr(visual, "class_embedding")


def require_vit(visual):
    """The width of a ViT image encoder; a clear error for the ResNet ones, which have no tokens to prompt."""
    if not is_vit(visual):
        raise ValueError(
            f"Visual prompts need a ViT image encoder; this CLIP's is {type(visual).__name__}. "
            "Choose a ViT backbone (e.g. MODEL.BACKBONE.NAME ViT-B/16)."
        )
    return visual.conv1.out_channels


def encode_prompted_images(visual, images, prompts=None, layer_hook=None, reference=False):
    """CLIP's ``VisionTransformer`` with prompt tokens appended after the patch tokens (any ViT width).

    ``prompts`` (``[n, width]``, shared by the images) are appended after the class and patch tokens, once the
    positional embedding is added and before ``ln_pre``, so the sequence is ``[CLS] patches prompts``.
    ``layer_hook(i, x)``, when given, may replace tokens of the sequence-first activations ``x`` (``[L, B, width]``)
    before block ``i`` runs (deep prompts). Without prompts and hook this is ``visual(images)`` (to float
    rounding; exactly with ``reference=True``, which runs CLIP's own block modules).
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
        x = run_block(block, x, reference=reference)
    x = visual.ln_post(x[0])
    return x @ visual.proj if visual.proj is not None else x


class ImageFeatureCache:
    """The frozen image encoder's features of every distinct image it was given, keyed by the image's exact bytes.

    A few-shot run shows the same training images (or their mirrored copies) every epoch, and a frozen, unprompted
    encoder maps an image to the same features each time, so encoding each distinct input once is exact (to the
    float rounding of a different batch). Keys are digests of the input tensors, not file names, so augmentations
    that change pixels (crops, colour jitter) are simply new images: correct, only slower.
    """

    def __init__(self):
        self._features = {}
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(image):
        """A digest of a CPU tensor's shape, dtype and bytes (any dtype: the bytes are read as they are stored)."""
        data = image.contiguous()
        digest = hashlib.blake2b(data.reshape(-1).view(torch.uint8).numpy().tobytes(), digest_size=20)
        digest.update(f"{tuple(data.shape)}{data.dtype}".encode())
        return digest.digest()

    def features(self, images, encode):
        on_cpu = images.detach().to("cpu")  # one copy per batch from a GPU
        keys = [self.key(image) for image in on_cpu]
        missing = {}  # key -> the first row that has it (an image twice in a batch is encoded once)
        for i, k in enumerate(keys):
            if k not in self._features:
                missing.setdefault(k, i)
        if missing:
            index = torch.tensor(list(missing.values()), device=images.device)
            with torch.no_grad():
                fresh = encode(images.index_select(0, index))
            for row, k in enumerate(missing):
                self._features[k] = fresh[row]
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return torch.stack([self._features[k] for k in keys])

    def __len__(self):
        return len(self._features)


class PromptedCLIP(nn.Module):
    """Frozen CLIP plus the learnable parts a trainer adds (its other submodules).

    CLIP's weights never get gradients and CLIP stays in eval mode even while the learnable parts train (so the
    ResNet backbones keep their BatchNorm statistics). Subclasses set ``image_independent`` to say whether the
    class weights can be computed once per evaluation, and implement ``class_weights``.
    """

    image_independent = True

    # The reference computation (what the official code does): full 77-token prompts through CLIP's own block
    # modules, the stock image encoder, and in subclasses any per-image loop they replace with a batched form.
    # Used by tests and the benchmark to check and time ours.
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

    # The frozen encoder's features of training images seen before (``use_image_cache``); None: every image is encoded.
    image_cache = None

    def encode_image(self, images, cacheable=True):
        # Only while training: the few-shot images come back every epoch, a test image is seen once.
        if self.image_cache is not None and cacheable and self.training and not self.reference_mode:
            return self.image_cache.features(images, self._encode_frozen)
        return self._encode_frozen(images)

    def _encode_frozen(self, images):
        return F.normalize(encode_images(self.clip, images, self.reference_mode).float(), dim=-1)

    @property
    def image_encoder_is_frozen(self):
        """Whether images go through CLIP's frozen, unprompted image encoder (this class's ``encode_image``)."""
        return type(self).encode_image is PromptedCLIP.encode_image

    def use_image_cache(self):
        """Encode each distinct image once (``MODEL.CACHE_IMAGE_FEATURES``): exact where the image encoder is
        frozen and unprompted; refused where it is prompted, since an image's features then change as it learns."""
        if not self.image_encoder_is_frozen:
            raise ValueError(f"{type(self).__name__} prompts its image encoder: its image features cannot be cached")
        self.image_cache = ImageFeatureCache()

    def class_weights(self):
        """Normalised class weights ``[C, D]`` (for image-independent prompts)."""
        raise NotImplementedError

    # Deep text prompts: ``(layer, x) -> x`` between the text blocks (MaPLe, IVLP); None for shallow prompts.
    text_layer_hook = None

    def prompt_features(self):
        """Normalised features ``[C, D]`` of the class prompts of ``self.prompt_learner`` (a ``ContextPrompts``)."""
        learner = self.prompt_learner
        features = self.encode_prompts(learner(), learner.eot_index, learner, layer_hook=self.text_layer_hook)
        return F.normalize(features.float(), dim=-1)

    def logits(self, image_features, weights):
        return self.logit_scale * image_features @ weights.t()

    def evaluation_weights(self):
        """Class weights for a whole evaluation, computed once; None where each batch needs its own (prompts
        that depend on the image, or the reference computation, which recomputes them per batch)."""
        if self.image_independent and not self.reference_mode:
            return self.class_weights()
        return None

    def predict(self, images, weights=None):
        """Logits of a test batch, with the weights of ``evaluation_weights()`` when there are any."""
        return self(images) if weights is None else self.logits(self.encode_image(images), weights)

    def forward(self, images):
        return self.logits(self.encode_image(images), self.class_weights())

    def training_loss(self, images, labels):
        """``(loss, logits, extra)``: the training objective; ``extra`` holds named scalars to log."""
        logits = self(images)
        return F.cross_entropy(logits, labels), logits, {}

    def encode_prompts(self, prompts, eot_index, prompt_module, **kwargs):
        """Features of prompt embeddings, through the reference path (padded to 77, no truncation) if asked."""
        if self.reference_mode:
            return self.text_encoder(prompt_module.full_length(prompts), eot_index, reference=True, **kwargs)
        return self.text_encoder(prompts, eot_index, **kwargs)

    def class_specific_parameters(self):
        """Names of learned parameters whose first dimension is the number of classes."""
        return ()
