"""The shared text encoder (EOT truncation), CLIP's own blocks, and the hand-crafted template features."""
import pytest
import torch
import torch.nn.functional as F
from fixtures import tiny_clip

from trainers.encoders import (
    TemplateFeatureCache,
    TextEncoder,
    causal_mask,
    encode_images,
    eot_positions,
    run_block,
    tokenize,
)

SENTENCES = ["a photo of a cat.", "a centered satellite photo of annual crop land.", "x", "a photo of a great pyrenees, a type of pet."]


def test_truncated_pass_equals_full_77_token_pass_and_clip_encode_text():
    model = tiny_clip()
    encoder = TextEncoder(model)
    tokens = tokenize(SENTENCES)
    eot = eot_positions(tokens)
    embeddings = model.token_embedding(tokens)
    with torch.no_grad():
        truncated = encoder(embeddings, eot)
        full = encoder(embeddings, eot, reference=True)
        clip_own = model.encode_text(tokens)
    assert int(eot.max()) + 1 < 77  # the truncated pass really is shorter
    torch.testing.assert_close(truncated, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(truncated, clip_own, rtol=1e-5, atol=1e-5)


def test_run_block_equals_clip_block_forward():
    model = tiny_clip()
    block = model.transformer.resblocks[0]
    x = torch.randn(77, 3, 64)
    with torch.no_grad():
        torch.testing.assert_close(run_block(block, x, block.attn_mask, reference=True), block(x), rtol=0, atol=0)
        torch.testing.assert_close(run_block(block, x, block.attn_mask), block(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("masked", [True, False])
def test_fused_block_gives_the_reference_values_and_gradients(masked):
    """The fused attention and MLP (our default) against CLIP's own modules, forward and backward, with the
    text encoder's causal mask and without a mask (the image encoder); float32, tolerance 1e-5."""
    model = tiny_clip(seed=2)
    block = model.visual.transformer.resblocks[1]
    mask = causal_mask(13) if masked else None
    x = torch.randn(13, 4, 64)
    results = []
    for reference in (False, True):
        inputs = x.clone().requires_grad_(True)
        out = run_block(block, inputs, mask, reference=reference)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        results.append((out.detach(), inputs.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-5)
    assert not torch.equal(results[0][0], x)  # the block did something


def test_frozen_image_encoder_equals_clips_own_forward():
    model = tiny_clip(seed=3)
    images = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = model.visual(images)
        torch.testing.assert_close(encode_images(model, images, reference=True), expected, rtol=0, atol=0)
        torch.testing.assert_close(encode_images(model, images), expected, rtol=1e-5, atol=1e-5)


def test_resnet_image_encoder_keeps_clips_own_forward():
    model = tiny_clip(vision_layers=(1, 1, 1, 1), vision_width=16, image_resolution=64)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(encode_images(model, images), model.visual(images), rtol=0, atol=0)


def test_layer_hook_sees_every_block_and_can_change_the_result():
    model = tiny_clip()
    encoder = TextEncoder(model)
    tokens = tokenize(SENTENCES[:2])
    embeddings = model.token_embedding(tokens)
    seen = []

    def hook(i, x):
        seen.append((i, tuple(x.shape)))
        return x

    with torch.no_grad():
        plain = encoder(embeddings, eot_positions(tokens))
        hooked = encoder(embeddings, eot_positions(tokens), layer_hook=hook)
        changed = encoder(embeddings, eot_positions(tokens), layer_hook=lambda i, x: x * 1.5 if i == 1 else x)
    length = int(eot_positions(tokens).max()) + 1
    assert seen == [(0, (length, 2, 64)), (1, (length, 2, 64))]
    torch.testing.assert_close(hooked, plain)
    assert not torch.allclose(changed, plain)


def test_template_features_equal_direct_computation_and_are_cached():
    model = tiny_clip()
    encoder = TextEncoder(model)
    classnames = ["great_pyrenees", "beagle", "sphynx"]
    templates = ("a photo of a {}.", "art of the {}.", "a {} in a video game.")
    with torch.no_grad():
        per_template = [
            F.normalize(model.encode_text(tokenize([t.format(c.replace("_", " ")) for c in classnames])), dim=-1)
            for t in templates
        ]
    expected = F.normalize(torch.stack(per_template).mean(0), dim=-1)

    cache = TemplateFeatureCache()
    first = cache.get(model, encoder, classnames, templates)
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-5)
    again = cache.get(model, encoder, classnames, templates)
    assert again is first and cache.computed == 1
    cache.get(model, encoder, classnames[:2], templates)
    assert cache.computed == 2
    assert not first.requires_grad


def test_unfused_text_encoder_runs_clips_own_blocks_on_the_truncated_prompts():
    """What the world CLIP's pretraining uses: bit-identical to CLIP's own block modules over max(eot) + 1
    positions (so that the shipped weights regenerate exactly), and close to the fused default."""
    model = tiny_clip(seed=6)
    tokens = tokenize(SENTENCES)
    eot = eot_positions(tokens)
    embeddings = model.token_embedding(tokens)
    length = int(eot.max()) + 1
    with torch.no_grad():
        x = (embeddings[:, :length] + model.positional_embedding[:length]).permute(1, 0, 2)
        for block in model.transformer.resblocks:
            x = run_block(block, x, causal_mask(length), reference=True)
        x = model.ln_final(x.permute(1, 0, 2))
        expected = x[torch.arange(len(SENTENCES)), eot] @ model.text_projection
        unfused = TextEncoder(model, fused=False)(embeddings, eot)
        fused = TextEncoder(model)(embeddings, eot)
    assert torch.equal(unfused, expected)
    torch.testing.assert_close(fused, expected, rtol=1e-5, atol=1e-5)


def test_image_cache_encodes_each_distinct_image_once_and_returns_its_features():
    from trainers.coop_model import CoOpCLIP

    model = CoOpCLIP(tiny_clip(seed=5), ["cat", "dog"], n_ctx=2)
    reference = CoOpCLIP(tiny_clip(seed=5), ["cat", "dog"], n_ctx=2)
    model.use_image_cache()
    images = torch.randn(4, 3, 32, 32)
    batch = torch.cat([images[:2], images[:2].flip(-1), images[1:3]])  # images 0 1, mirrored 0 1, then 1 2
    with torch.no_grad():
        first = model.encode_image(batch)
        expected = reference.encode_image(batch)
    torch.testing.assert_close(first, expected, rtol=1e-5, atol=1e-6)
    cache = model.image_cache
    assert (cache.misses, cache.hits, len(cache)) == (5, 1, 5)  # image 1 twice in one batch: encoded once
    again = torch.cat([images[3:], batch[:3]])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(again), reference.encode_image(again), rtol=1e-5, atol=1e-6)
    assert (cache.misses, cache.hits, len(cache)) == (6, 4, 6)
    nudged = batch[:1].clone()
    nudged[0, 0, 0, 0] += 1e-3  # a changed pixel is another image
    model.encode_image(nudged)
    assert cache.misses == 7
    # the training loss through the cache is the loss without it, and its gradient reaches the context
    labels = torch.tensor([0, 1, 0, 1, 0, 1])
    loss, _, _ = model.training_loss(batch, labels)
    expected_loss, _, _ = reference.training_loss(batch, labels)
    torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert model.prompt_learner.ctx.grad.abs().sum() > 0
    # a mixed image (DualMIPrompt's pixel mixing) is new every step: it bypasses the cache
    model.encode_image(images * 0.5, cacheable=False)
    assert len(cache) == 7
    # evaluation sees each test image once: nothing is cached, and the features are the encoder's
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images * 2), reference.encode_image(images * 2))
    assert (len(cache), cache.misses) == (7, 7)


def test_a_model_that_prompts_its_image_encoder_refuses_the_cache():
    from trainers.coop_model import CoOpCLIP
    from trainers.ivlp_model import IVLPCLIP

    assert CoOpCLIP(tiny_clip(), ["cat"], n_ctx=2).image_encoder_is_frozen
    ivlp = IVLPCLIP(tiny_clip(), ["cat"], depth_text=1, depth_vision=1)
    assert not ivlp.image_encoder_is_frozen
    with pytest.raises(ValueError, match="prompts its image encoder"):
        ivlp.use_image_cache()
