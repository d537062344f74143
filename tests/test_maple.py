"""MaPLe's model: the official formulation rewritten here with CLIP's own modules, and the prompt placement
checked block by block with hooks."""
import pytest
import torch
import torch.nn.functional as F
from clip import clip as clip_module
from fixtures import assert_gradients_close, tiny_clip

from trainers.clip_loader import cast_frozen_weights
from trainers.encoders import causal_mask, encode_prompted_images, run_block
from trainers.maple_model import MaPLeCLIP

NAMES = ["abyssinian", "american_bulldog", "great_pyrenees", "staffordshire bull terrier dog"]
# Four layers in each encoder, and a vision width (128) other than the text width (64).
DEEP = dict(transformer_layers=4, vision_layers=4, vision_width=128)


def build(depth=3, seed=0, clip_model=None, n_ctx=2, ctx_init="a photo of a", **clip_overrides):
    clip_model = clip_model if clip_model is not None else tiny_clip(seed, **{**DEEP, **clip_overrides})
    model = MaPLeCLIP(clip_model, NAMES, n_ctx=n_ctx, ctx_init=ctx_init, prompt_depth=depth)
    with torch.no_grad():  # move every learned tensor away from its initial value so that each one matters
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    return model


def images(count, seed=1):
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def learned(model):
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def official_logits(model, batch):
    """The official MaPLe forward (multimodal-prompt-learning, clip/model.py), written out with CLIP's own blocks
    over the full 77 text positions."""
    clip_model, depth, n = model.clip, model.prompt_depth, model.n_ctx
    ctx, deep_text = model.prompt_learner.ctx, list(model.deep_text_prompts)
    deep_visual = [F.linear(t, proj.weight, proj.bias) for t, proj in zip(deep_text, model.deep_visual_projections)]

    tokens = clip_module.tokenize([f"a photo of a {name.replace('_', ' ')}." for name in NAMES])
    classes = len(NAMES)
    embedded = clip_model.token_embedding(tokens)
    embedded = torch.cat([embedded[:, :1], ctx.expand(classes, -1, -1), embedded[:, 1 + n:]], dim=1)
    x = (embedded + clip_model.positional_embedding).permute(1, 0, 2)
    for k, block in enumerate(clip_model.transformer.resblocks):
        if 1 <= k < depth:
            x = torch.cat([x[:1], deep_text[k - 1][:, None].expand(-1, classes, -1), x[1 + n:]])
        x = block(x)
    x = clip_model.ln_final(x.permute(1, 0, 2))
    text = x[torch.arange(classes), tokens.argmax(dim=-1)] @ clip_model.text_projection

    visual, count = clip_model.visual, batch.shape[0]
    x = visual.conv1(batch).flatten(2).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding + torch.zeros(count, 1, x.shape[-1]), x], dim=1)
    x = x + visual.positional_embedding
    shared = F.linear(ctx, model.visual_projection.weight, model.visual_projection.bias)
    x = visual.ln_pre(torch.cat([x, shared.expand(count, -1, -1)], dim=1)).permute(1, 0, 2)
    for k, block in enumerate(visual.transformer.resblocks):
        if 1 <= k < depth:
            x = torch.cat([x[:-n], deep_visual[k - 1][:, None].expand(-1, count, -1)])
        x = block(x)
    image = visual.ln_post(x[0]) @ visual.proj

    image, text = image / image.norm(dim=-1, keepdim=True), text / text.norm(dim=-1, keepdim=True)
    return clip_model.logit_scale.exp() * image @ text.t()


@pytest.mark.parametrize("depth", [1, 3, 4])
@pytest.mark.parametrize("reference_mode", [False, True])
def test_logits_loss_and_gradients_equal_the_official_formulation(depth, reference_mode):
    model = build(depth)
    model.reference_mode = reference_mode
    batch, labels = images(3), torch.tensor([2, 0, 3])
    loss, logits, _ = model.training_loss(batch, labels)
    loss.backward()
    ours = {name: p.grad.clone() for name, p in learned(model).items()}
    model.zero_grad()

    expected = official_logits(model, batch)
    expected_loss = F.cross_entropy(expected, labels)
    expected_loss.backward()
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    assert_gradients_close(ours, {name: p.grad for name, p in learned(model).items()})


def test_parameters_and_initialisation_follow_the_official_code():
    clip_model = tiny_clip(0, **DEEP)
    model = MaPLeCLIP(clip_model, NAMES, n_ctx=2, ctx_init="a photo of a", prompt_depth=3)
    shapes = {name: tuple(p.shape) for name, p in learned(model).items()}
    assert shapes == {
        "prompt_learner.ctx": (2, 64),
        "visual_projection.weight": (128, 64), "visual_projection.bias": (128,),
        "deep_text_prompts.0": (2, 64), "deep_text_prompts.1": (2, 64),
        "deep_visual_projections.0.weight": (128, 64), "deep_visual_projections.0.bias": (128,),
        "deep_visual_projections.1.weight": (128, 64), "deep_visual_projections.1.bias": (128,),
    }
    # N_CTX 2 with "a photo of a": the context starts as the embeddings of "a photo" and the prompt keeps "of a".
    tokens = clip_module.tokenize("a photo of a")
    torch.testing.assert_close(model.prompt_learner.ctx.data, clip_model.token_embedding(tokens)[0, 1:3].detach())
    learner = model.prompt_learner
    text = [clip_module.tokenize(f"a photo of a {name.replace('_', ' ')}.")[0] for name in NAMES]
    suffix_tokens = torch.stack(text)[:, 3:learner.token_suffix.shape[1] + 3]
    torch.testing.assert_close(learner.token_suffix, clip_model.token_embedding(suffix_tokens).detach())
    # The deeper projections are copies of one linear map; the layer-0 projection has its own initial weights.
    first, second = model.deep_visual_projections
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)
    assert not torch.equal(model.visual_projection.weight, first.weight)
    deep = torch.stack(list(model.deep_text_prompts)).detach()
    assert 0.005 < deep.std().item() < 0.05  # N(0, 0.02)


def test_more_than_four_context_tokens_start_at_random_like_the_official_code():
    model = MaPLeCLIP(tiny_clip(0, **DEEP), NAMES, n_ctx=5, ctx_init="a photo of a", prompt_depth=2)
    assert model.prompt_learner.prompt_prefix == "X X X X X"
    assert model.prompt_learner.ctx.shape == (5, 64)


def record_block_inputs(blocks):
    """Hooks on every block's first LayerNorm: what each block receives, after any prompt replacement."""
    inputs, handles = [], []
    for block in blocks:
        handles.append(block.ln_1.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach())))
    return inputs, handles


def run_hooked(model, batch):
    text_inputs, text_handles = record_block_inputs(model.clip.transformer.resblocks)
    image_inputs, image_handles = record_block_inputs(model.clip.visual.transformer.resblocks)
    with torch.no_grad():
        model.class_weights()
        model.encode_image(batch)
    for handle in text_handles + image_handles:
        handle.remove()
    return text_inputs, image_inputs


@pytest.mark.parametrize("depth", [1, 2, 3, 4])
def test_deep_prompts_replace_exactly_their_tokens_below_the_depth(depth):
    model = build(depth)
    n = model.n_ctx
    text_inputs, image_inputs = run_hooked(model, images(2))
    text_blocks, image_blocks = model.clip.transformer.resblocks, model.clip.visual.transformer.resblocks
    with torch.no_grad():
        projected = [F.linear(t, p.weight, p.bias) for t, p in zip(model.deep_text_prompts, model.deep_visual_projections)]
        for k in range(1, 4):
            text_before = run_block(text_blocks[k - 1], text_inputs[k - 1], causal_mask(text_inputs[k - 1].shape[0]))
            image_before = run_block(image_blocks[k - 1], image_inputs[k - 1])
            text_prompt = slice(1, 1 + n)
            image_prompt = slice(image_before.shape[0] - n, None)
            if k < depth:  # the layer-k prompts, broadcast to every class / image
                expected_text = model.deep_text_prompts[k - 1][:, None].expand(-1, text_before.shape[1], -1)
                expected_image = projected[k - 1][:, None].expand(-1, image_before.shape[1], -1)
            else:  # no replacement: the previous block's outputs go on
                expected_text, expected_image = text_before[text_prompt], image_before[image_prompt]
            torch.testing.assert_close(text_inputs[k][text_prompt], expected_text, rtol=0, atol=1e-6)
            torch.testing.assert_close(image_inputs[k][image_prompt], expected_image, rtol=0, atol=1e-6)
            # Every other token is the previous block's output, untouched.
            torch.testing.assert_close(text_inputs[k][:1], text_before[:1], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(text_inputs[k][1 + n:], text_before[1 + n:], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(image_inputs[k][:-n], image_before[:-n], rtol=1e-5, atol=1e-6)
    assert image_inputs[0].shape[0] == 1 + 16 + n  # [CLS], 4x4 patches, then the visual prompts


def test_layer0_visual_prompts_are_the_projection_of_the_text_context_after_the_patches():
    model = build(3)
    batch = images(2)
    seen = []
    handle = model.clip.visual.ln_pre.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    with torch.no_grad():
        model.encode_image(batch)
    handle.remove()
    visual, n = model.clip.visual, model.n_ctx
    with torch.no_grad():
        shared = F.linear(model.prompt_learner.ctx, model.visual_projection.weight, model.visual_projection.bias)
        patches = visual.conv1(batch).flatten(2).permute(0, 2, 1)
        tokens = torch.cat([visual.class_embedding.expand(2, 1, -1), patches], dim=1) + visual.positional_embedding
    (x,) = seen
    assert x.shape == (2, 1 + 16 + n, 128)
    torch.testing.assert_close(x[:, -n:], shared.expand(2, -1, -1), rtol=0, atol=0)
    torch.testing.assert_close(x[:, :-n], tokens, rtol=1e-6, atol=1e-6)


def test_without_prompts_both_encoders_are_plain_clip():
    clip_model = tiny_clip(0, **DEEP)
    model = MaPLeCLIP(clip_model, NAMES, n_ctx=2, ctx_init="a photo of a", prompt_depth=1)
    batch = images(3)
    with torch.no_grad():
        # The context still holds the embeddings of "a photo" and depth 1 adds no deeper prompt.
        texts = clip_module.tokenize([f"a photo of a {name.replace('_', ' ')}." for name in NAMES])
        plain_text = F.normalize(clip_model.encode_text(texts), dim=-1)
        torch.testing.assert_close(model.class_weights(), plain_text, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(encode_prompted_images(clip_model.visual, batch), clip_model.visual(batch),
                                   rtol=1e-5, atol=1e-5)


def test_gradients_reach_only_the_learned_parameters():
    model = build(3)
    loss, _, _ = model.training_loss(images(2), torch.tensor([1, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert name.startswith("clip.") and p.grad is None, name


@pytest.mark.parametrize("precision", ["bf16", "fp16", "amp"])
def test_low_precision_keeps_learned_parameters_in_fp32_and_logits_close_to_fp32(precision):
    """The trainer's precisions on the CPU: frozen weights cast to bf16 / fp16, or fp32 weights under fp16
    autocast (amp; the trainer autocasts on CUDA, the CPU autocast runs the same casts here)."""
    model = build(3)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "amp": torch.float32}[precision]
    low = MaPLeCLIP(cast_frozen_weights(tiny_clip(0, **DEEP), dtype), NAMES, prompt_depth=3)
    low.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("clip.")}, strict=False)
    assert low.clip.visual.conv1.weight.dtype == dtype
    assert low.clip.ln_final.weight.dtype == torch.float32  # LayerNorms stay fp32, as in CLIP's fp16 conversion
    assert all(p.dtype == torch.float32 for p in learned(low).values())
    batch, labels = images(2), torch.tensor([0, 2])
    with torch.no_grad():
        reference = model(batch)
    autocast = torch.autocast("cpu", dtype=torch.float16, enabled=precision == "amp")
    with autocast:
        loss, logits, _ = low.training_loss(batch, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in learned(low).values())
    torch.testing.assert_close(logits.detach().float(), reference, rtol=0.05, atol=0.2)


def test_other_vit_widths():
    model = build(2, vision_width=192, transformer_width=128, embed_dim=48)
    assert model.visual_projection.weight.shape == (192, 128)
    logits = model(images(2))
    assert logits.shape == (2, len(NAMES))
    torch.testing.assert_close(logits, official_logits(model, images(2)), rtol=1e-5, atol=1e-5)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="PROMPT_DEPTH must be between 1 .* and 4"):
        build(5)
    with pytest.raises(ValueError, match="PROMPT_DEPTH"):
        build(0)
    with pytest.raises(ValueError, match="N_CTX 3 must be between 1 and the 2 tokens"):
        build(2, n_ctx=3, ctx_init="a photo")
    resnet = tiny_clip(0, vision_layers=(1, 1, 1, 1), vision_width=64)
    with pytest.raises(ValueError, match="ViT image encoder.*ModifiedResNet"):
        MaPLeCLIP(resnet, NAMES)
