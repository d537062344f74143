"""IVLP and PromptSRC on the tiny CLIP: logits, losses and gradients against the official formulation
(muzairkhattak/PromptSRC: trainers/independentVL.py, trainers/promptsrc.py, clip/model.py), rewritten here with
CLIP's own modules over the full 77 text positions; the GPA weights and the aggregation over epochs against the
official rule; the regularisers at 0 as IVLP; what a checkpoint holds; the configs against the official ones; the
registry and benchmark cases; one short run of the protocol scripts per trainer on the embedded world.

Tolerances (fp32): logits and losses 1e-5 (relative and absolute; the two computations sum in other orders),
gradients ``fixtures.assert_gradients_close`` (1e-4 relative plus 1e-5 of each tensor's largest entry)."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures import REPO, assert_gradients_close, flat, run_script, tiny_clip

from trainers import registry
from trainers.aggregation import GaussianPromptAggregation, gpa_weights
from trainers.clip_loader import cast_frozen_weights, random_clip
from trainers.config import load_yaml_with_bases
from trainers.encoders import tokenize
from trainers.ivlp_model import IVLPCLIP
from trainers.promptsrc_model import IMAGENET_TEMPLATES, PromptSRCCLIP, frozen_text_features

NAMES = ["abyssinian", "american_bulldog", "great_pyrenees", "staffordshire bull terrier dog"]
NEW = ["birman", "boxer", "chihuahua"]
LABELS = torch.tensor([2, 0, 3])
# Four layers in each encoder and a vision width (128) other than the text width (64), for deeper prompts and to
# catch a width mixed up between the encoders; random_clip("tiny") has two layers and one width (64).
DEEP = dict(transformer_layers=4, vision_layers=4, vision_width=128)
TEMPLATES = ("a photo of a {}.", "a bad photo of the {}.", "art of the {}.")
CONFIGS = os.path.join(REPO, "configs", "trainers")
LOGITS_TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny():
    return random_clip("tiny")


@pytest.fixture(scope="module")
def deep():
    return tiny_clip(0, **DEEP)


def images(count=3, seed=1, size=32):
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def learned(model):
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def perturb(*models, seed=0, scale=0.05):
    """The same offsets added to every learned tensor of each model, so that each tensor matters and the prompted
    features differ from the frozen ones."""
    generator = torch.Generator().manual_seed(seed)
    offsets = {name: torch.randn(p.shape, generator=generator) * scale for name, p in learned(models[0]).items()}
    with torch.no_grad():
        for model in models:
            for name, p in learned(model).items():
                p.add_(offsets[name])
    return models[0] if len(models) == 1 else models


def grads(model):
    return {name: p.grad.clone() for name, p in learned(model).items()}


# ----------------------------------------------------------------------- the official formulation, CLIP's modules
def official_text(model, classnames=NAMES):
    """VLPromptLearner + TextEncoder + ResidualAttentionBlock_IVLP (text side): the prompts ``[SOS] ctx rest`` of
    "a photo of a name." over all 77 positions; before block k (1 <= k < depth) tokens 1..n are replaced by the
    layer's prompts; the EOT feature, projected."""
    clip_model, n, depth = model.clip, model.n_ctx_text, model.depth_text
    ctx, deep = model.prompt_learner.ctx, list(model.deep_text_prompts)
    prefix = model.prompt_learner.prompt_prefix
    tokens = tokenize([f"{prefix} {name.replace('_', ' ')}." for name in classnames])
    count = len(classnames)
    embedded = clip_model.token_embedding(tokens)
    x = torch.cat([embedded[:, :1], ctx.expand(count, -1, -1), embedded[:, 1 + n:]], dim=1)
    x = (x + clip_model.positional_embedding).permute(1, 0, 2)
    for k, block in enumerate(clip_model.transformer.resblocks):
        if 1 <= k < depth:
            x = torch.cat([x[:1], deep[k - 1].expand(count, -1, -1).permute(1, 0, 2), x[1 + n:]])
        x = block(x)
    x = clip_model.ln_final(x.permute(1, 0, 2))
    return x[torch.arange(count), tokens.argmax(dim=-1)] @ clip_model.text_projection


def official_image(model, batch):
    """VisionTransformer + ResidualAttentionBlock_IVLP (image side): the layer-0 prompts appended after the class and
    patch tokens (after the positional embedding, before ln_pre), the last n tokens replaced before block k."""
    visual, depth, count = model.clip.visual, model.depth_vision, batch.shape[0]
    x = visual.conv1(batch).flatten(2).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding + torch.zeros(count, 1, x.shape[-1]), x], dim=1)
    x = x + visual.positional_embedding
    if depth > 0:
        x = torch.cat([x, model.visual_ctx.expand(count, -1, -1)], dim=1)
    x = visual.ln_pre(x).permute(1, 0, 2)
    for k, block in enumerate(visual.transformer.resblocks):
        if 1 <= k < depth:
            n = model.n_ctx_vision
            x = torch.cat([x[:-n], model.deep_visual_prompts[k - 1].expand(count, -1, -1).permute(1, 0, 2)])
        x = block(x)
    return visual.ln_post(x[0]) @ visual.proj


def official_logits(model, batch, classnames=NAMES):
    image, text = official_image(model, batch), official_text(model, classnames)
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    return model.clip.logit_scale.exp() * image @ text.t(), image, text


@torch.no_grad()
def official_fixed_embeddings(clip_model, classnames, templates):
    """``fixed_embeddings`` of the official VLPromptLearner: ``encode_text`` of each template filled with each class
    name, stacked on dim 1 and averaged (not normalised; the forward pass normalises the mean)."""
    names = [name.replace("_", " ") for name in classnames]
    features = [clip_model.encode_text(tokenize([t.replace("{}", name) for name in names])).unsqueeze(1)
                for t in templates]
    return torch.cat(features, dim=1).mean(dim=1)


def official_promptsrc_loss(model, batch, labels, templates, text_weight, image_weight):
    """``CustomCLIP.forward`` (training branch) + ``PromptSRC.forward_backward`` (its fp32 branch)."""
    logits, image_ft, text_ft = official_logits(model, batch)
    loss_ce = F.cross_entropy(logits, labels)
    logit_scale = model.clip.logit_scale.exp()
    fixed = official_fixed_embeddings(model.clip, NAMES, templates)
    fixed = fixed / fixed.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        zero_shot = model.clip.visual(batch)
        zero_shot = zero_shot / zero_shot.norm(dim=-1, keepdim=True)
        zero_shot_logits = logit_scale * zero_shot @ fixed.t()
    loss_text = F.l1_loss(text_ft, fixed, reduction="mean") * text_weight
    loss_image = F.l1_loss(image_ft, zero_shot, reduction="mean") * image_weight
    loss_logits = F.kl_div(F.log_softmax(logits / 1, dim=1), F.log_softmax(zero_shot_logits / 1, dim=1),
                           reduction="sum", log_target=True) * (1 * 1) / logits.numel()
    parts = {"loss_ce": loss_ce, "l1_text": loss_text / text_weight, "l1_image": loss_image / image_weight,
             "kl_logits": loss_logits}
    return loss_ce + (loss_logits + loss_text + loss_image), logits, parts


def official_gauss_weights(max_epoch, mean, std):
    """``PromptSRC.build_model``: the normal density at epochs 1..N, divided by its sum."""
    gauss = lambda x: (1 / (std * np.sqrt(2 * np.pi))) * np.exp(-0.5 * ((x - mean) / std) ** 2)  # noqa: E731
    weights = np.array([gauss(a) for a in range(1, max_epoch + 1)])
    return weights / sum(weights)


# ----------------------------------------------------------------------------------------------------- IVLP
CASES = [("tiny", 1, 0), ("tiny", 2, 2), ("tiny", 2, 1), ("tiny", 1, 2), ("deep", 3, 3), ("deep", 4, 2),
         ("deep", 2, 4)]


@pytest.mark.parametrize("reference_mode", [False, True])
@pytest.mark.parametrize("clip_name,depth_text,depth_vision", CASES)
def test_ivlp_logits_loss_and_gradients_equal_the_official_formulation(request, clip_name, depth_text, depth_vision,
                                                                       reference_mode):
    model = perturb(IVLPCLIP(request.getfixturevalue(clip_name), NAMES, depth_text=depth_text,
                             depth_vision=depth_vision))
    model.reference_mode = reference_mode
    batch = images()
    loss, logits, extra = model.training_loss(batch, LABELS)
    loss.backward()
    ours = grads(model)
    model.zero_grad()

    expected, _, _ = official_logits(model, batch)
    expected_loss = F.cross_entropy(expected, LABELS)
    expected_loss.backward()
    torch.testing.assert_close(logits, expected, **LOGITS_TOL)
    torch.testing.assert_close(loss, expected_loss, **LOGITS_TOL)
    assert extra == {}
    assert_gradients_close(ours, grads(model))
    with torch.no_grad():  # evaluation: the class weights once, then each batch
        torch.testing.assert_close(model.predict(batch, model.evaluation_weights()), expected, **LOGITS_TOL)


def test_ivlp_parameters_and_initialisation_follow_the_official_code(deep):
    model = IVLPCLIP(deep, NAMES, n_ctx_text=4, n_ctx_vision=3, ctx_init="a photo of a", depth_text=3, depth_vision=2)
    shapes = {name: tuple(p.shape) for name, p in learned(model).items()}
    assert shapes == {"prompt_learner.ctx": (4, 64), "deep_text_prompts.0": (4, 64), "deep_text_prompts.1": (4, 64),
                      "visual_ctx": (3, 128), "deep_visual_prompts.0": (3, 128)}
    # N_CTX_TEXT 4 with "a photo of a": the context starts as the embeddings of those words; the prompt is
    # [SOS] V_1..V_4 [name] . [EOS].
    tokens = tokenize("a photo of a")
    torch.testing.assert_close(model.prompt_learner.ctx.data, deep.token_embedding(tokens)[0, 1:5].detach())
    assert model.prompt_learner.prompt_prefix == "a photo of a"
    # Every other prompt is N(0, 0.02).
    others = torch.cat([p.detach().flatten() for name, p in learned(model).items() if name != "prompt_learner.ctx"])
    assert 0.012 < others.std().item() < 0.03 and abs(others.mean().item()) < 0.01
    # More than 4 text tokens start at random, as in the official code ("X X X X X").
    assert IVLPCLIP(deep, NAMES, n_ctx_text=5, depth_text=1, depth_vision=1).prompt_learner.prompt_prefix == "X X X X X"
    # At ViT-B/16 (text width 512, vision width 768, 12 layers) with the official 4 + 4 tokens and depth 9 in both:
    # 9 * 4 * 512 + 9 * 4 * 768 = 46,080 learned numbers (the paper's 46K).
    assert 9 * 4 * 512 + 9 * 4 * 768 == 46_080


def test_ivlp_vision_depth_zero_leaves_the_image_encoder_as_it_is(tiny):
    model = perturb(IVLPCLIP(tiny, NAMES, depth_text=2, depth_vision=0))
    assert model.visual_ctx is None and len(model.deep_visual_prompts) == 0
    batch = images()
    with torch.no_grad():
        plain = F.normalize(tiny.visual(batch), dim=-1)
        torch.testing.assert_close(model.encode_image(batch), plain, rtol=1e-5, atol=1e-6)


def test_a_model_trained_on_base_classes_evaluates_on_new_ones(tiny):
    trained = perturb(IVLPCLIP(tiny, NAMES, depth_text=2, depth_vision=2))
    checkpoint = {name: p.detach().clone() for name, p in learned(trained).items()}
    evaluated = IVLPCLIP(tiny, NEW, depth_text=2, depth_vision=2)
    missing, unexpected = evaluated.load_state_dict(checkpoint, strict=False)
    assert not unexpected and not set(checkpoint) & set(missing)
    batch = images()
    with torch.no_grad():
        expected, _, _ = official_logits(evaluated, batch, NEW)
        torch.testing.assert_close(evaluated.predict(batch, evaluated.evaluation_weights()), expected, **LOGITS_TOL)


def test_bad_settings_are_refused(tiny, deep):
    with pytest.raises(ValueError, match="PROMPT_DEPTH_TEXT must be between 1 .* and 2"):
        IVLPCLIP(tiny, NAMES, depth_text=3, depth_vision=1)
    with pytest.raises(ValueError, match="PROMPT_DEPTH_TEXT"):
        IVLPCLIP(tiny, NAMES, depth_text=0, depth_vision=1)
    with pytest.raises(ValueError, match="PROMPT_DEPTH_VISION must be between 0 .* and 4"):
        IVLPCLIP(deep, NAMES, depth_text=1, depth_vision=5)
    with pytest.raises(ValueError, match="N_CTX_VISION"):
        IVLPCLIP(tiny, NAMES, n_ctx_vision=0, depth_text=1, depth_vision=1)
    with pytest.raises(ValueError, match="N_CTX 3 must be between 1 and the 2 tokens"):
        IVLPCLIP(tiny, NAMES, n_ctx_text=3, ctx_init="a photo", depth_text=1, depth_vision=1)
    with pytest.raises(ValueError, match="TEXT_LOSS_WEIGHT"):
        PromptSRCCLIP(tiny, NAMES, TEMPLATES, depth_text=1, depth_vision=1, text_loss_weight=-1.0)
    with pytest.raises(ValueError, match="templates"):
        PromptSRCCLIP(tiny, NAMES, ("a photo of a thing.",), depth_text=1, depth_vision=1)
    resnet = tiny_clip(0, vision_layers=(1, 1, 1, 1), vision_width=64)
    with pytest.raises(ValueError, match="ViT image encoder.*ModifiedResNet"):
        IVLPCLIP(resnet, NAMES)


# ------------------------------------------------------------------------------------------------ PromptSRC
@pytest.mark.parametrize("reference_mode", [False, True])
@pytest.mark.parametrize("clip_name,depth_text,depth_vision,templates,weights", [
    ("tiny", 2, 2, IMAGENET_TEMPLATES, (25.0, 10.0)),
    ("tiny", 1, 0, TEMPLATES, (25.0, 10.0)),
    ("deep", 3, 3, TEMPLATES, (25.0, 10.0)),
    ("deep", 4, 2, TEMPLATES, (3.0, 0.5)),
])
def test_promptsrc_loss_logits_and_gradients_equal_the_official_formulation(request, clip_name, depth_text,
                                                                             depth_vision, templates, weights,
                                                                             reference_mode):
    clip_model = request.getfixturevalue(clip_name)
    text_weight, image_weight = weights
    model = perturb(PromptSRCCLIP(clip_model, NAMES, templates, depth_text=depth_text, depth_vision=depth_vision,
                                  text_loss_weight=text_weight, image_loss_weight=image_weight), scale=0.2)
    model.reference_mode = reference_mode
    batch = images()
    loss, logits, extra = model.training_loss(batch, LABELS)
    loss.backward()
    ours = grads(model)
    model.zero_grad()

    expected_loss, expected_logits, parts = official_promptsrc_loss(model, batch, LABELS, templates, text_weight,
                                                                    image_weight)
    expected_loss.backward()
    torch.testing.assert_close(logits, expected_logits, **LOGITS_TOL)
    torch.testing.assert_close(loss, expected_loss, **LOGITS_TOL)
    assert set(extra) == set(parts)
    for name, value in parts.items():
        torch.testing.assert_close(extra[name], value.detach(), rtol=1e-5, atol=1e-6, msg=name)
    # Every term is active: the prompted features are away from the frozen ones.
    assert min(float(extra[name]) for name in ("l1_text", "kl_logits")) > 1e-4
    if depth_vision > 0:
        assert float(extra["l1_image"]) > 1e-4
    assert_gradients_close(ours, grads(model))


def test_frozen_text_features_are_the_normalised_mean_of_raw_features_computed_once(tiny):
    model = PromptSRCCLIP(tiny, NAMES, TEMPLATES, depth_text=2, depth_vision=2)
    calls = []
    model.text_encoder.register_forward_hook(lambda *args: calls.append(1))
    for step in range(3):
        model.training_loss(images(seed=step), LABELS)
    assert model.frozen_text_computed == 1 and len(calls) == len(TEMPLATES) + 3  # the templates once, then 1 a step
    expected = F.normalize(official_fixed_embeddings(tiny, NAMES, TEMPLATES), dim=-1)
    torch.testing.assert_close(model.frozen_text_features(), expected, rtol=1e-5, atol=1e-6)
    # Not the zero-shot ensemble's mean of normalised features (which the official code does not compute).
    with torch.no_grad():
        per_template = [F.normalize(tiny.encode_text(tokenize([t.format(n.replace("_", " ")) for n in NAMES])), dim=-1)
                        for t in TEMPLATES]
    assert not torch.allclose(F.normalize(sum(per_template), dim=-1), expected, atol=1e-4)
    assert not model.frozen_text_features().requires_grad
    # Another class set (base-to-new) gets its own; nothing of it is module state.
    model.set_classnames(NEW)
    torch.testing.assert_close(model.frozen_text_features(), frozen_text_features(tiny, model.text_encoder, NEW,
                                                                                   TEMPLATES))
    assert model.frozen_text_computed == 2
    assert {key for key in model.state_dict() if not key.startswith(("clip.", "text_encoder."))} == set(learned(model))
    assert len(IMAGENET_TEMPLATES) == len(set(IMAGENET_TEMPLATES)) == 60
    assert (IMAGENET_TEMPLATES[0], IMAGENET_TEMPLATES[-1]) == ("a photo of a {}.", "itap of the {}.")


def test_with_the_regularisers_at_zero_promptsrc_is_ivlp(deep):
    ivlp = IVLPCLIP(deep, NAMES, depth_text=3, depth_vision=3)
    src = PromptSRCCLIP(deep, NAMES, TEMPLATES, depth_text=3, depth_vision=3, text_loss_weight=0.0,
                        image_loss_weight=0.0, logit_loss_weight=0.0)
    src.load_state_dict({name: p.detach() for name, p in learned(ivlp).items()}, strict=False)
    perturb(ivlp, src)
    batch = images()
    ivlp_loss, ivlp_logits, _ = ivlp.training_loss(batch, LABELS)
    src_loss, src_logits, extra = src.training_loss(batch, LABELS)
    assert torch.equal(src_logits, ivlp_logits) and torch.equal(src_loss, ivlp_loss) and extra == {}
    ivlp_loss.backward()
    src_loss.backward()
    assert grads(src).keys() == grads(ivlp).keys()
    assert all(torch.equal(grads(src)[name], value) for name, value in grads(ivlp).items())
    assert src.frozen_text_computed == 0  # nothing frozen is computed for terms that are off
    with torch.no_grad():
        assert torch.equal(src.predict(batch, src.evaluation_weights()), ivlp.predict(batch, ivlp.evaluation_weights()))
    # Each weight switches its own term on.
    for key, term in (("text_loss_weight", "l1_text"), ("image_loss_weight", "l1_image"),
                      ("logit_loss_weight", "kl_logits")):
        weights = {"text_loss_weight": 0.0, "image_loss_weight": 0.0, "logit_loss_weight": 0.0, key: 1.0}
        one = PromptSRCCLIP(deep, NAMES, TEMPLATES, depth_text=3, depth_vision=3, **weights)
        one.load_state_dict({name: p.detach() for name, p in learned(src).items()}, strict=False)
        loss, _, extra = one.training_loss(batch, LABELS)
        assert set(extra) == {"loss_ce", term}
        torch.testing.assert_close(loss.detach(), src_loss.detach() + extra[term])


def test_low_precision_keeps_learned_parameters_in_fp32_and_the_loss_close_to_fp32(deep):
    model = perturb(PromptSRCCLIP(deep, NAMES, TEMPLATES, depth_text=3, depth_vision=3))
    low = PromptSRCCLIP(cast_frozen_weights(tiny_clip(0, **DEEP), torch.bfloat16), NAMES, TEMPLATES, depth_text=3,
                        depth_vision=3)
    low.load_state_dict({name: p.detach() for name, p in learned(model).items()}, strict=False)
    batch = images()
    with torch.no_grad():
        reference, reference_logits, _ = model.training_loss(batch, LABELS)
    loss, logits, _ = low.training_loss(batch, LABELS)
    loss.backward()
    assert all(p.dtype == torch.float32 and p.grad is not None and p.grad.dtype == torch.float32
               for p in learned(low).values())
    torch.testing.assert_close(logits.detach().float(), reference_logits, rtol=0.05, atol=0.3)
    torch.testing.assert_close(loss.detach(), reference, rtol=0.05, atol=0.1)


def test_gradients_reach_only_the_learned_parameters(deep):
    model = perturb(PromptSRCCLIP(deep, NAMES, TEMPLATES, depth_text=3, depth_vision=3))
    model.train()
    assert not model.clip.training
    loss, _, _ = model.training_loss(images(), LABELS)
    loss.backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert name.startswith("clip.") and p.grad is None, name


# ----------------------------------------------------------------------------- Gaussian prompt aggregation
@pytest.mark.parametrize("max_epoch,mean,std", [(20, 15, 1), (20, 6, 10), (50, 30, 30), (50, 45, 567), (5, 2.5, 0.7),
                                                (1, 15, 1)])
def test_gpa_weights_per_epoch_are_the_official_rule(max_epoch, mean, std):
    ours = np.array(gpa_weights(max_epoch, mean, std))
    official = official_gauss_weights(max_epoch, mean, std)
    np.testing.assert_allclose(ours, official, rtol=1e-9, atol=1e-300)
    assert ours.sum() == pytest.approx(1.0, abs=1e-12)
    if (max_epoch, mean, std) == (20, 15, 1):  # the official base-to-new setting: epoch 15 weighs 0.40, 13..17 0.99
        assert ours[14] == pytest.approx(0.39894, abs=1e-5) and ours[12:17].sum() == pytest.approx(0.99087, abs=1e-5)


def train_epoch(model, optimizer, epoch, steps=2):
    for step in range(steps):
        optimizer.zero_grad()
        loss, _, _ = model.training_loss(images(seed=10 * epoch + step), LABELS)
        loss.backward()
        optimizer.step()


def test_gpa_over_the_epochs_is_the_official_aggregation(tiny):
    """Three epochs of SGD on two identical models: ours aggregates with GaussianPromptAggregation; the other as the
    official ``forward_backward`` at each epoch's last batch (the whole state dict, weighted and summed), then loads
    the sum. The learned parameters agree, and the frozen entries of the official sum are the frozen weights."""
    max_epoch, mean, std = 3, 2.0, 1.0
    ours = perturb(PromptSRCCLIP(tiny, NAMES, TEMPLATES, depth_text=2, depth_vision=2))
    theirs = PromptSRCCLIP(random_clip("tiny"), NAMES, TEMPLATES, depth_text=2, depth_vision=2)
    theirs.load_state_dict({name: p.detach() for name, p in learned(ours).items()}, strict=False)
    gpa = GaussianPromptAggregation(learned(ours), max_epoch, mean, std)
    gauss = official_gauss_weights(max_epoch, mean, std)
    optimizers = [torch.optim.SGD(list(learned(m).values()), lr=0.5) for m in (ours, theirs)]
    previous_model_gpa, per_epoch = None, []
    for epoch in range(1, max_epoch + 1):
        train_epoch(ours, optimizers[0], epoch)
        train_epoch(theirs, optimizers[1], epoch)
        per_epoch.append({name: p.detach().clone() for name, p in learned(ours).items()})
        assert gpa.end_epoch(epoch) == (epoch == max_epoch)
        weighted = {key: value * gauss[epoch - 1] for key, value in theirs.state_dict().items()}
        previous_model_gpa = weighted if previous_model_gpa is None else {
            key: previous_model_gpa[key] + value for key, value in weighted.items()}
    theirs.load_state_dict(previous_model_gpa)
    for name, p in learned(ours).items():
        torch.testing.assert_close(p.detach(), learned(theirs)[name].detach(), rtol=1e-5, atol=1e-6)
        expected = sum(w * snapshot[name] for w, snapshot in zip(gauss, per_epoch))
        torch.testing.assert_close(p.detach(), expected.float(), rtol=1e-6, atol=1e-7)
    for key, value in tiny.state_dict().items():  # the official sum leaves the frozen weights as they were
        torch.testing.assert_close(previous_model_gpa["clip." + key], value, rtol=1e-5, atol=1e-6)
    # The epochs' parameters differ, so the average is not just the last epoch's.
    assert not torch.allclose(per_epoch[-1]["prompt_learner.ctx"], learned(ours)["prompt_learner.ctx"])


def test_gpa_state_resumes_and_refuses_other_settings(tiny):
    model = perturb(IVLPCLIP(tiny, NAMES, depth_text=2, depth_vision=2))
    params = learned(model)
    straight = GaussianPromptAggregation(params, 3, 2.0, 1.0)
    values = []
    for epoch in range(1, 4):
        with torch.no_grad():
            for p in params.values():
                p.add_(0.1 * epoch)
        values.append({name: p.detach().clone() for name, p in params.items()})
        if epoch == 1:
            straight.end_epoch(epoch)
            saved = straight.state()
    resumed = GaussianPromptAggregation(params, 3, 2.0, 1.0)
    resumed.load(saved)
    for epoch in (2, 3):
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(values[epoch - 1][name])
        resumed.end_epoch(epoch)
    weights = gpa_weights(3, 2.0, 1.0)
    for name, p in params.items():
        torch.testing.assert_close(p.detach(), sum(w * v[name] for w, v in zip(weights, values)).float())
    with pytest.raises(ValueError, match="other weights"):
        GaussianPromptAggregation(params, 3, 1.0, 1.0).load(saved)
    with pytest.raises(ValueError, match="learned parameters"):
        GaussianPromptAggregation({"other": params["prompt_learner.ctx"]}, 3, 2.0, 1.0).load(saved)
    # The state is plain tensors and numbers (checkpoints load it with weights_only=True) of the learned names only.
    assert set(saved) == {"epochs", "weights", "total"} and set(saved["total"]) == set(params)


def test_what_a_checkpoint_holds_is_the_learned_prompts_and_the_gpa_sum(tiny):
    """What ``PromptTrainer.save_model`` writes: the learned parameters (here every tensor PromptSRC learns) and
    ``extra_checkpoint_state`` (the GPA sum of the same names); no tensor of the frozen CLIP."""
    model = PromptSRCCLIP(tiny, NAMES, TEMPLATES, depth_text=2, depth_vision=2)
    state = {name: p.detach().clone() for name, p in learned(model).items()}
    gpa = GaussianPromptAggregation(learned(model), 2, 15.0, 1.0)
    gpa.end_epoch(1)
    frozen = {"clip." + key for key in tiny.state_dict()} | {n for n, p in model.named_parameters() if not p.requires_grad}
    assert set(state) == {"prompt_learner.ctx", "deep_text_prompts.0", "visual_ctx", "deep_visual_prompts.0"}
    assert not set(state) & frozen and not set(gpa.state()["total"]) & frozen
    assert sum(v.numel() for v in state.values()) == 2 * 4 * 64 + 2 * 4 * 64


# --------------------------------------------------------------------------------- configs, registry, benchmark
COMMON = {  # every official IVLP / PromptSRC config (muzairkhattak/PromptSRC, configs/trainers/{IVLP,PromptSRC}/)
    "DATALOADER.TRAIN_X.BATCH_SIZE": 4, "DATALOADER.TEST.BATCH_SIZE": 100, "DATALOADER.NUM_WORKERS": 8,
    "INPUT.SIZE": "(224, 224)", "INPUT.INTERPOLATION": "bicubic",
    "INPUT.PIXEL_MEAN": [0.48145466, 0.4578275, 0.40821073], "INPUT.PIXEL_STD": [0.26862954, 0.26130258, 0.27577711],
    "INPUT.TRANSFORMS": ["random_resized_crop", "random_flip", "normalize"],
    "OPTIM.NAME": "sgd", "OPTIM.LR": 0.0025, "OPTIM.MAX_EPOCH": 20, "OPTIM.LR_SCHEDULER": "cosine",
    "OPTIM.WARMUP_EPOCH": 1, "OPTIM.WARMUP_TYPE": "constant", "OPTIM.WARMUP_CONS_LR": "1e-5",
    "TRAIN.PRINT_FREQ": 20, "MODEL.BACKBONE.NAME": "ViT-B/16",
}


def trainer_keys(key, depth, **extra):
    keys = {"N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a photo of a", "PREC": "fp16",
            "PROMPT_DEPTH_VISION": depth, "PROMPT_DEPTH_TEXT": depth, **extra}
    return {f"TRAINER.{key}.{name}": value for name, value in keys.items()}


OFFICIAL_CONFIGS = {
    ("IVLP", "vit_b16_c2_ep20_batch4_4+4ctx"): {**COMMON, **trainer_keys("IVLP", 9)},
    ("PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx"): {**COMMON, **trainer_keys(
        "PROMPTSRC", 9, TEXT_LOSS_WEIGHT=25, IMAGE_LOSS_WEIGHT=10, GPA_MEAN=15, GPA_STD=1)},
    ("PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets"): {**COMMON, **trainer_keys(
        "PROMPTSRC", 3, TEXT_LOSS_WEIGHT=25, IMAGE_LOSS_WEIGHT=10, GPA_MEAN=6, GPA_STD=10)},
    ("PromptSRC", "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"): {**COMMON, "OPTIM.MAX_EPOCH": 50, **trainer_keys(
        "PROMPTSRC", 9, TEXT_LOSS_WEIGHT=25, IMAGE_LOSS_WEIGHT=10, GPA_MEAN=30, GPA_STD=30)},
}


@pytest.mark.parametrize("trainer,name", list(OFFICIAL_CONFIGS))
def test_the_configs_carry_the_official_values(trainer, name):
    ours = flat(load_yaml_with_bases(os.path.join(CONFIGS, trainer, name + ".yaml")))
    assert ours == OFFICIAL_CONFIGS[(trainer, name)]


def test_the_world_configs_are_the_official_setting_on_the_small_clip():
    official = OFFICIAL_CONFIGS[("PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx")]
    world_only = {"DATALOADER.TEST.BATCH_SIZE", "DATALOADER.NUM_WORKERS", "INPUT.SIZE", "INPUT.TRANSFORMS",
                  "MODEL.BACKBONE.NAME", "MODEL.BACKBONE.PATH"}
    maple = flat(load_yaml_with_bases(os.path.join(CONFIGS, "MaPLe", "world.yaml")))
    for trainer, key in (("IVLP", "IVLP"), ("PromptSRC", "PROMPTSRC")):
        ours = flat(load_yaml_with_bases(os.path.join(CONFIGS, trainer, "world.yaml")))
        # The optimisation is the official one; the data and backbone are the world's, as in MaPLe's world config.
        assert {k: v for k, v in ours.items() if not k.startswith("TRAINER.") and k not in world_only} == {
            k: v for k, v in official.items() if not k.startswith("TRAINER.") and k not in world_only}
        assert {k: ours[k] for k in world_only} == {k: maple[k] for k in world_only}
        prompts = trainer_keys(key, 3, PREC="fp32")
        assert {k: ours[k] for k in prompts} == prompts  # depth 3 of the small CLIP's 4 layers, as MaPLe's world
    src = flat(load_yaml_with_bases(os.path.join(CONFIGS, "PromptSRC", "world.yaml")))
    regularisation = {k: v for k, v in src.items() if k.startswith("TRAINER.") and k not in trainer_keys("PROMPTSRC", 3)}
    assert regularisation == {f"TRAINER.PROMPTSRC.{k}": v for k, v in dict(
        TEXT_LOSS_WEIGHT=25.0, IMAGE_LOSS_WEIGHT=10.0, LOGIT_LOSS_WEIGHT=1.0, GPA_MEAN=15.0, GPA_STD=1.0,
        FROZEN_TEMPLATES="ensemble").items()}  # the official weights and GPA; the world's own phrasings


def test_the_configs_merge_into_the_trainer_nodes():
    pytest.importorskip("dassl")
    from trainers.config import get_cfg_default, merge_file

    cfg = get_cfg_default()
    # PromptSRC's node: the official train.py's defaults (= its base-to-new config) plus this toolbox's two keys.
    assert dict(cfg.TRAINER.PROMPTSRC) == {
        "N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a photo of a", "PREC": "fp16", "PROMPT_DEPTH_VISION": 9,
        "PROMPT_DEPTH_TEXT": 9, "TEXT_LOSS_WEIGHT": 25.0, "IMAGE_LOSS_WEIGHT": 10.0, "LOGIT_LOSS_WEIGHT": 1.0,
        "GPA_MEAN": 15.0, "GPA_STD": 1.0, "FROZEN_TEMPLATES": "imagenet"}
    assert dict(cfg.TRAINER.IVLP) == {"N_CTX_VISION": 4, "N_CTX_TEXT": 4, "CTX_INIT": "a photo of a", "PREC": "fp16",
                                      "PROMPT_DEPTH_VISION": 9, "PROMPT_DEPTH_TEXT": 9}
    for (trainer, name), values in OFFICIAL_CONFIGS.items():
        merged = get_cfg_default()
        merge_file(merged, os.path.join(CONFIGS, trainer, name + ".yaml"))
        for key, value in values.items():
            if key.startswith("TRAINER."):
                node = merged.TRAINER[key.split(".")[1]]
                assert node[key.split(".")[2]] == value, key
        assert (merged.OPTIM.LR, merged.DATALOADER.TRAIN_X.BATCH_SIZE) == (0.0025, 4)
    for trainer in ("IVLP", "PromptSRC"):
        merge_file(get_cfg_default(), os.path.join(CONFIGS, trainer, "world.yaml"))


def test_declared_after_maple_with_configs_per_protocol_and_benchmark_cases():
    import benchmark

    names = registry.names()
    assert names.index("MaPLe") < names.index("IVLP") < names.index("PromptSRC") < names.index("DualMIPrompt")
    expected = {
        "IVLP": dict.fromkeys(registry.PROTOCOLS, "vit_b16_c2_ep20_batch4_4+4ctx"),
        "PromptSRC": {"base2new": "vit_b16_c2_ep20_batch4_4+4ctx",
                      "xd": "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets",
                      "dg": "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets",
                      "fewshot": "vit_b16_c2_ep50_batch4_4+4ctx_few_shot"},
    }
    for trainer, configs in expected.items():
        spec = registry.get(trainer)
        assert (spec.adapter, spec.learns, spec.world_config, spec.in_suite) == (
            f"trainers.{trainer.lower()}", True, "world", True)
        for protocol, config in configs.items():
            for dataset in ("imagenet", "dtd"):
                assert spec.config_name(protocol, dataset, 4) == config
                assert os.path.isfile(os.path.join(REPO, spec.config_path(config)))
        assert spec.config_name("base2new", "world_shapes") == "world"
        assert trainer in benchmark.benchmark_trainers()

    clip_model = random_clip("tiny")
    x, labels = images(4), torch.tensor([0, 3, 7, 9])
    for trainer, kind in (("IVLP", IVLPCLIP), ("PromptSRC", PromptSRCCLIP)):
        results = {}
        for mode in benchmark.MODES:
            torch.manual_seed(0)
            model = benchmark.build_case(trainer, clip_model, 10, mode, torch.device("cpu"))
            assert type(model) is kind and (model.depth_text, model.depth_vision) == (2, 2)  # tiny: 2 layers
            assert (model.n_ctx_text, model.n_ctx_vision) == (4, 4)
            loss, logits, _ = model.training_loss(x, labels)
            loss.backward()
            results[mode] = (loss.detach(), logits.detach(), grads(model))
        if trainer == "PromptSRC":
            assert model.templates == IMAGENET_TEMPLATES
        torch.testing.assert_close(results["ours"][0], results["reference"][0], **LOGITS_TOL)
        torch.testing.assert_close(results["ours"][1], results["reference"][1], **LOGITS_TOL)
        assert_gradients_close(results["ours"][2], results["reference"][2])


def test_published_averages_are_the_readme_s_with_their_source():
    from trainers.results import published

    # The README of github.com/muzairkhattak/PromptSRC: 11-dataset base-to-novel averages (Base, New, HM).
    assert published.BASE2NEW_AVERAGE["PromptSRC"] == (84.26, 76.10, 79.97)
    assert published.BASE2NEW_AVERAGE["IVLP"] == (84.21, 71.79, 77.51)
    for paper in ("IVLP", "PromptSRC"):
        base, new, harmonic = published.BASE2NEW_AVERAGE[paper]
        assert harmonic == pytest.approx(2 * base * new / (base + new), abs=0.011)
        assert published.TRAINER_OF[paper] == paper and "PromptSRC" in published.BASE2NEW_AVERAGE_SOURCES[paper]
        assert paper not in published.BASE2NEW  # no per-dataset numbers were read in a source


# ----------------------------------------------------------------------------- one short run per trainer
@pytest.fixture(scope="module")
def runs_env(world_env, tmp_path_factory):
    """The session's generated world (made once for every test that needs it), runs of its own."""
    return {"DATA": world_env["DATA"], "OUTPUT": str(tmp_path_factory.mktemp("ivlp_promptsrc") / "output"),
            "SHOTS": "2"}


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


# One epoch for IVLP (without the warm-up epoch, which the config check refuses when it is the whole run). Two for
# PromptSRC, with the Gaussian centred on epoch 1 (weights 0.62 and 0.38), so that the real trainer's aggregation is
# seen: the last checkpoint holds the weighted sum of the epochs' prompts.
RUNS = {"IVLP": ["OPTIM.MAX_EPOCH", "1", "OPTIM.WARMUP_EPOCH", "0"],
        "PromptSRC": ["OPTIM.MAX_EPOCH", "2", "TRAINER.PROMPTSRC.GPA_MEAN", "1.0", "TRAINER.PROMPTSRC.GPA_STD", "1.0"]}
LEARNED = {"prompt_learner.ctx", "deep_text_prompts.0", "deep_text_prompts.1", "visual_ctx", "deep_visual_prompts.0",
           "deep_visual_prompts.1"}  # depth 3 in both encoders


def load_checkpoint(folder, epoch):
    return torch.load(os.path.join(folder, "prompt_learner", f"model.pth.tar-{epoch}"), map_location="cpu",
                      weights_only=True)


@pytest.mark.integration
@pytest.mark.parametrize("trainer", ["IVLP", "PromptSRC"])
def test_base_to_new_on_the_world(runs_env, trainer):
    overrides = RUNS[trainer]
    epochs = int(overrides[1])
    run_script("base2new_train.sh", ["world", 1, trainer], overrides, env=runs_env)
    run_script("base2new_test.sh", ["world", 1, trainer], overrides, env=runs_env)
    common = f"world/shots_2/{trainer}/world/seed1"
    train_dir = os.path.join(runs_env["OUTPUT"], "base2new", "train_base", common)
    base = read_json(os.path.join(train_dir, "results.json"))
    new = read_json(os.path.join(runs_env["OUTPUT"], "base2new", "test_new", common, "results.json"))
    assert (base["trainer"], base["config"], base["subsample"], base["epoch"]) == (trainer, "world", "base", epochs)
    assert (new["subsample"], new["eval_only"], new["epoch"]) == ("new", True, epochs)
    assert base["num_classes"] == new["num_classes"] == 20
    logged = base["training"]["last_epoch"]
    # The checkpoint holds the learned prompts (4 + 4 tokens in 3 + 3 layers, each of the world CLIP's width) and, for
    # PromptSRC, the GPA sum of the same names: nothing of the frozen CLIP.
    with open(os.path.join(REPO, "trainers", "pretrained", "world_clip.json")) as handle:
        settings = json.load(handle)["settings"]
    assert settings["text_width"] == settings["vision_width"] == 128
    last = load_checkpoint(train_dir, epochs)
    assert set(last["state_dict"]) == LEARNED
    assert sum(v.numel() for v in last["state_dict"].values()) == 6 * 4 * settings["text_width"]
    if trainer == "IVLP":
        assert "gpa" not in last and set(logged) >= {"loss", "acc"}
        return
    first = load_checkpoint(train_dir, 1)
    weights = gpa_weights(2, 1.0, 1.0)
    for checkpoint, epoch in ((first, 1), (last, 2)):
        gpa = checkpoint["gpa"]
        assert gpa["epochs"] == epoch and gpa["weights"].tolist() == weights and set(gpa["total"]) == LEARNED
    for name, value in last["state_dict"].items():
        # Epoch 1's sum is w_1 theta_1; the last epoch's parameters are the whole sum, w_1 theta_1 + w_2 theta_2.
        torch.testing.assert_close(first["gpa"]["total"][name], weights[0] * first["state_dict"][name].double())
        torch.testing.assert_close(value, last["gpa"]["total"][name].float())
        assert not torch.allclose(value, first["state_dict"][name])
    assert set(logged) >= {"loss", "loss_ce", "l1_text", "l1_image", "kl_logits"}
    total = logged["loss_ce"] + 25 * logged["l1_text"] + 10 * logged["l1_image"] + logged["kl_logits"]
    assert logged["loss"] == pytest.approx(total, rel=1e-4, abs=1e-5)
