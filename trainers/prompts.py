"""Learnable context prompts (CoOp's formulation), shared by every trainer that learns a text context.

For class ``c`` the prompt is ``[SOS] V [name_c] . [EOS]`` (class token at the end), ``[SOS] V_1 [name_c] V_2 .``
(middle) or ``[SOS] [name_c] V .`` (front). The three layouts are one gather over the same source tensor, so
building the prompts of all classes has no Python loop over classes.
"""
import torch
import torch.nn as nn

from .config import CLIP_CONTEXT_LENGTH, ConfigError
from .encoders import clean_classnames, eot_positions, name_token_counts, tokenize, tokenizer

POSITIONS = ("end", "middle", "front")


def tokenize_fitting(texts, too_long):
    """``tokenize(texts)``, or ``ConfigError(too_long(text, n_tokens))`` for the longest text when one does not fit
    CLIP's context (clip.tokenize would raise with the whole text in its message)."""
    try:
        return tokenize(texts, context_length=CLIP_CONTEXT_LENGTH)
    except RuntimeError:
        counts = [len(tokenizer().encode(text)) + 2 for text in texts]  # + [SOS] and [EOS]
        longest = max(range(len(texts)), key=counts.__getitem__)
        if counts[longest] <= CLIP_CONTEXT_LENGTH:
            raise
        raise ConfigError(too_long(texts[longest], counts[longest])) from None


def context_init_vectors(token_embedding, ctx_init, n_ctx, ctx_dim, n_classes=None, n_ctx_from_init=True):
    """Initial context: the embeddings of ``ctx_init``'s words, or N(0, 0.02) noise (CoOp's rule).

    With ``n_ctx_from_init`` (CoOp, CoCoOp) the words set the number of context tokens. Without it (MaPLe) the
    context is the first ``n_ctx`` tokens of the words, and the prompt text keeps all of them, so the remaining
    words stay in the prompt as fixed tokens ("a photo of a" with 2 tokens: learned "a photo", fixed "of a").
    """
    if ctx_init:
        words = ctx_init.replace("_", " ")
        tokens = tokenize_fitting([words], lambda text, n: (
            f"CTX_INIT has {n - 2} tokens, more than CLIP's {CLIP_CONTEXT_LENGTH}-token text context can hold with "
            "the class name: give fewer words.")).to(token_embedding.weight.device)
        available = int(eot_positions(tokens)[0]) - 1
        if n_ctx_from_init:
            n_ctx = available
        elif not 1 <= n_ctx <= available:
            raise ValueError(
                f"N_CTX {n_ctx} must be between 1 and the {available} tokens of CTX_INIT {ctx_init!r}: the context "
                "is initialised from the first N_CTX tokens of CTX_INIT. Lower N_CTX or give more words."
            )
        with torch.no_grad():
            # clone: a view would keep (and save) the storage of all 77 token embeddings
            vectors = token_embedding(tokens)[0, 1 : 1 + n_ctx].float().cpu().clone()
        if n_classes is not None:
            vectors = vectors.unsqueeze(0).repeat(n_classes, 1, 1)
        return vectors, words
    shape = (n_ctx, ctx_dim) if n_classes is None else (n_classes, n_ctx, ctx_dim)
    vectors = torch.empty(shape)
    nn.init.normal_(vectors, std=0.02)
    return vectors, " ".join(["X"] * n_ctx)


def layout_index(name_lens, n_ctx, length, position):
    """For each class, the source position (in ``[SOS] ctx suffix`` order) of every output token."""
    rows = []
    for name_len in name_lens:
        sos, ctx = [0], list(range(1, 1 + n_ctx))
        name = list(range(1 + n_ctx, 1 + n_ctx + name_len))
        rest = list(range(1 + n_ctx + name_len, length))
        if position == "end":
            order = sos + ctx + name + rest
        elif position == "middle":
            half = n_ctx // 2
            order = sos + ctx[:half] + name + ctx[half:] + rest
        else:
            order = sos + name + ctx + rest
        rows.append(order)
    return torch.tensor(rows, dtype=torch.long)


class ContextPrompts(nn.Module):
    """Learnable context ``V`` (shared, or class-specific with ``csc``) placed around each class name.

    Only ``ctx`` is a parameter. The class-dependent token embeddings are non-persistent buffers: they are rebuilt
    from the current class names and never saved, so a context learned on base classes applies to new ones.
    Prompts are stored only up to the longest EOT position (+1): the causal text encoder never looks further.
    """

    def __init__(self, clip_model, classnames, n_ctx=16, ctx_init="", csc=False, position="end",
                 n_ctx_from_init=True):
        super().__init__()
        if position not in POSITIONS:
            raise ValueError(f"CLASS_TOKEN_POSITION must be one of {', '.join(POSITIONS)}; got {position!r}")
        self.token_embedding = [clip_model.token_embedding]  # a list: frozen CLIP is not a child of this module
        ctx_dim = clip_model.ln_final.weight.shape[0]
        vectors, self.prompt_prefix = context_init_vectors(
            clip_model.token_embedding, ctx_init, n_ctx, ctx_dim, len(classnames) if csc else None, n_ctx_from_init
        )
        self.ctx = nn.Parameter(vectors)
        self.n_ctx = vectors.shape[-2]
        self.csc = csc
        self.position = position
        self.set_classnames(classnames)

    def set_classnames(self, classnames):
        names = clean_classnames(classnames)
        if self.csc and len(names) != self.ctx.shape[0]:
            raise ValueError(
                f"Class-specific context (CSC) holds {self.ctx.shape[0]} classes; cannot build prompts for "
                f"{len(names)} classes."
            )
        embedding = self.token_embedding[0]
        device = embedding.weight.device
        prompts = [f"{self.prompt_prefix} {name}." for name in names]
        tokens = tokenize_fitting(prompts, lambda text, n: (
            f"The prompt of class {names[prompts.index(text)][:80]!r} needs {n} tokens, more than CLIP's "
            f"{CLIP_CONTEXT_LENGTH}-token text context: use fewer context tokens (N_CTX {self.n_ctx}, or fewer CTX_INIT "
            "words) or a shorter class name.")).to(device)
        eot = eot_positions(tokens)
        length = int(eot.max()) + 1
        with torch.no_grad():
            embedded = embedding(tokens)
        self.n_classes = len(names)
        self.register_buffer("tokens", tokens, persistent=False)
        self.register_buffer("eot_index", eot, persistent=False)
        self.register_buffer("token_prefix", embedded[:, :1], persistent=False)
        self.register_buffer("token_suffix", embedded[:, 1 + self.n_ctx : length], persistent=False)
        # The embedding of the padding token, to rebuild full 77-token prompts for the reference path.
        self.register_buffer("pad_embedding", embedded[:1, -1:], persistent=False)
        index = None
        if self.position != "end":
            index = layout_index(name_token_counts(names), self.n_ctx, length, self.position).to(device)
        self.register_buffer("layout", index, persistent=False)

    def assemble(self, ctx):
        """Prompts ``[..., C, L, width]`` from context ``ctx`` of shape ``[n_ctx, w]``, ``[C, n_ctx, w]`` or
        ``[B, 1, n_ctx, w]`` (one context per image, broadcast over classes)."""
        prefix, suffix = self.token_prefix, self.token_suffix
        lead = torch.broadcast_shapes(ctx.shape[:-2], (self.n_classes,))
        ctx = ctx.to(prefix.dtype).expand(*lead, -1, -1)
        prompts = torch.cat([prefix.expand(*lead, -1, -1), ctx, suffix.expand(*lead, -1, -1)], dim=-2)
        if self.layout is not None:
            index = self.layout.expand(*lead, -1).unsqueeze(-1).expand(*lead, -1, prompts.shape[-1])
            prompts = torch.gather(prompts, -2, index)
        return prompts

    def forward(self):
        return self.assemble(self.ctx)

    def full_length(self, prompts, context_length=77):
        """The same prompts padded back to CLIP's full context length (the reference computation)."""
        missing = context_length - prompts.shape[-2]
        pad = self.pad_embedding.to(prompts.dtype).expand(*prompts.shape[:-2], missing, -1)
        return torch.cat([prompts, pad], dim=-2)
