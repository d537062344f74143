"""DualMIPrompt's model on the tiny CLIP (pure torch): CoOp equivalence, gradients, caching, losses, inference."""
import math

import pytest
import torch
import torch.nn.functional as F
from fixtures import tiny_clip

from trainers.coop_model import CoOpCLIP
from trainers.dualmiprompt_model import DualMIOptions, DualMIPromptCLIP
from trainers.encoders import template_features
from trainers.mutual_info import plan_mix

BASE = ["abyssinian", "american_bulldog", "basset_hound", "beagle", "bengal"]
NEW = ["birman", "boxer", "chihuahua"]
TEMPLATES = ("a photo of a {}, a type of pet.", "itap of a {}.")
LABELS = torch.tensor([0, 0, 1, 2, 2, 3, 4, 4])


@pytest.fixture(scope="module")
def clip_model():
    return tiny_clip()


def images(n=8, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def build(clip_model, classnames=BASE, **options):
    return DualMIPromptCLIP(clip_model, classnames, TEMPLATES, DualMIOptions(**options))


def same_context(*models, seed=1):
    values = torch.randn(models[0].prompt_learner.ctx.shape, generator=torch.Generator().manual_seed(seed)) * 0.05
    with torch.no_grad():
        for model in models:
            model.prompt_learner.ctx.copy_(values)


def learned_names(model):
    return sorted(name for name, p in model.named_parameters() if p.requires_grad)


class CallCounter:
    def __init__(self, module):
        self.calls = 0
        module.register_forward_hook(self.hook)

    def hook(self, *args):
        self.calls += 1


def test_without_mi_terms_it_is_coop(clip_model):
    coop = CoOpCLIP(clip_model, BASE, n_ctx=4, ctx_init="a photo of a")
    dual = build(clip_model, w_text_mi=0.0, w_vis_mi=0.0)
    same_context(coop, dual)
    x = images()
    coop_loss, coop_logits, _ = coop.training_loss(x, LABELS)
    dual_loss, dual_logits, extra = dual.training_loss(x, LABELS)
    assert torch.equal(dual_logits, coop_logits)
    assert torch.equal(dual_loss, coop_loss)
    coop_loss.backward()
    dual_loss.backward()
    assert torch.equal(dual.prompt_learner.ctx.grad, coop.prompt_learner.ctx.grad)
    assert learned_names(dual) == learned_names(coop) == ["prompt_learner.ctx"]
    assert extra == {}
    assert torch.equal(dual.eval()(x), coop.eval()(x))


def test_classification_is_coop_s_even_with_the_mi_terms(clip_model):
    coop = CoOpCLIP(clip_model, BASE, n_ctx=4, ctx_init="a photo of a")
    dual = build(clip_model)
    same_context(coop, dual)
    x = images()
    coop_loss, coop_logits, _ = coop.training_loss(x, LABELS)
    loss, logits, extra = dual.training_loss(x, LABELS)
    assert torch.equal(logits, coop_logits)
    assert extra["loss_ce"] == coop_loss.detach()
    total = extra["loss_ce"] + 1.0 * extra["loss_tmi"] + 0.1 * extra["loss_vmi"]  # the default weights
    assert loss.item() == pytest.approx(total.item(), rel=1e-6)
    for key in ("loss_tmi", "mi_bound_text", "kappa_text", "loss_vmi", "mi_bound_vis", "kappa_vis", "mix_lambda"):
        assert math.isfinite(float(extra[key]))
    assert float(extra["mi_bound_text"]) == pytest.approx(math.log(len(BASE)) - float(extra["loss_tmi"]), rel=1e-5)


@pytest.mark.parametrize("estimator, text_ceiling", [("infonce", math.log(len(BASE))), ("jsd", math.log(2)),
                                                     ("dv", None)])
def test_every_logged_value_is_a_number_for_each_estimator(clip_model, estimator, text_ceiling):
    """The trainer logs each extra as a float: a bound without a ceiling (Donsker-Varadhan) logs no ceiling."""
    dual = build(clip_model, estimator=estimator, vis_estimator=estimator)
    _, _, extra = dual.training_loss(images(), LABELS)
    assert all(math.isfinite(float(value)) for value in extra.values())
    assert extra.get("mi_ceiling_text") == (None if text_ceiling is None else pytest.approx(text_ceiling))
    assert ("mi_ceiling_vis" in extra) == (estimator != "dv")


def test_text_mi_is_the_estimator_over_soft_and_hand_crafted_views(clip_model):
    dual = build(clip_model, w_vis_mi=0.0, kappa_init=0.05)
    coop = CoOpCLIP(clip_model, BASE, n_ctx=4, ctx_init="a photo of a")
    same_context(coop, dual)
    _, _, extra = dual.training_loss(images(), LABELS)
    soft = coop.class_weights().detach().double()
    hand = template_features(clip_model, dual.text_encoder, BASE, TEMPLATES).double()
    scores = soft @ hand.t() / 0.05
    target = torch.arange(len(BASE))
    expected = (F.cross_entropy(scores, target) + F.cross_entropy(scores.t(), target)) / 2
    assert float(extra["loss_tmi"]) == pytest.approx(expected.item(), rel=1e-4)
    assert "loss_vmi" not in extra


@pytest.mark.parametrize("space", ["feature", "pixel"])
@pytest.mark.parametrize("mode", ["inter", "intra"])
def test_visual_mi_ties_mixed_features_to_mixed_prototypes(clip_model, space, mode):
    dual = build(clip_model, w_text_mi=0.0, mix_space=space, mix_mode=mode, vis_kappa_init=0.02)
    x = images()
    torch.manual_seed(7)
    _, _, extra = dual.training_loss(x, LABELS)
    torch.manual_seed(7)
    plan = plan_mix(LABELS, mode, 1.0)  # the same draws as inside the step: nothing else uses the RNG before
    with torch.no_grad():
        if space == "pixel":
            mixed_images = torch.stack([plan.lam[i] * x[i] + (1 - plan.lam[i]) * x[plan.partners[i]] for i in range(8)])
            mixed = dual.encode_image(mixed_images)
        else:
            features = dual.encode_image(x)
            mixed = torch.stack([F.normalize(plan.lam[i] * features[i] + (1 - plan.lam[i]) * features[plan.partners[i]],
                                             dim=0) for i in range(8)])
        soft = dual.soft_features()
    prototypes = []
    keys = []
    for i in range(8):
        a, b, lam = int(LABELS[i]), int(LABELS[plan.partners[i]]), float(plan.lam[i])
        if mode == "intra":
            prototypes.append(soft[a])
            keys.append((a,))
        else:
            prototypes.append(F.normalize(lam * soft[a] + (1 - lam) * soft[b], dim=0))
            keys.append((a, b, lam) if a <= b else (b, a, 1 - lam))
    scores = mixed.double() @ torch.stack(prototypes).double().t() / 0.02
    rows = cols = 0.0
    for i in range(8):
        keep = [k for k in range(8) if k == i or keys[k] != keys[i]]
        rows += torch.logsumexp(scores[i, keep], 0) - scores[i, i]
        cols += torch.logsumexp(scores[keep, i], 0) - scores[i, i]
    expected = (rows + cols) / 16
    assert float(extra["loss_vmi"]) == pytest.approx(expected.item(), rel=1e-4)
    assert float(extra["mix_lambda"]) == pytest.approx(plan.lam.mean().item())


def test_pixel_mixing_costs_one_more_image_pass_and_feature_mixing_none(clip_model):
    counter = CallCounter(clip_model.visual.conv1)  # the patch embedding: once per image-encoder pass
    for space, passes in (("feature", 1), ("pixel", 2)):
        dual = build(clip_model, mix_space=space)
        before = counter.calls
        dual.training_loss(images(), LABELS)
        assert counter.calls - before == passes


@pytest.mark.parametrize("critic", ["cosine", "bilinear", "mlp"])
def test_gradients_reach_context_and_critics_only(clip_model, critic):
    dual = build(clip_model, critic=critic, vis_critic="", critic_hidden=16)
    if critic == "mlp":
        # The heads start as the identity (zero output layer), which leaves their hidden layer without gradient on
        # the very first step; give the output layers values so that every path is exercised.
        with torch.no_grad():
            for module in (dual.text_critic, dual.vis_critic):
                for head in (module.head_a, module.head_b):
                    head.out.weight.normal_(std=0.1)
    hand_before = dual.hand_crafted_features().clone()
    loss, _, _ = dual.training_loss(images(), LABELS)
    loss.backward()
    for name, param in dual.named_parameters():
        if name.startswith("clip."):
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    learned = learned_names(dual)
    assert all(n == "prompt_learner.ctx" or n.startswith(("text_critic.", "vis_critic.")) for n in learned)
    expected = {"prompt_learner.ctx", "text_critic.temperature.log_kappa", "vis_critic.temperature.log_kappa"}
    assert expected <= set(learned)
    hand = dual.hand_crafted_features()
    assert not hand.requires_grad and hand.grad is None and hand.grad_fn is None
    assert torch.equal(hand, hand_before)
    # The cached features are no module state: they are not saved, and rebuilt for each class set.
    assert not any("hand" in key for key in dual.state_dict())


def test_fixed_temperature_is_not_learned(clip_model):
    """LEARN_KAPPA fixes the dual-view temperature, VIS_LEARN_KAPPA the visual one, each on its own."""
    assert learned_names(build(clip_model, learn_kappa=False)) == ["prompt_learner.ctx",
                                                                    "vis_critic.temperature.log_kappa"]
    assert learned_names(build(clip_model, vis_learn_kappa=False)) == ["prompt_learner.ctx",
                                                                        "text_critic.temperature.log_kappa"]
    dual = build(clip_model, learn_kappa=False, vis_learn_kappa=False)
    assert learned_names(dual) == ["prompt_learner.ctx"]
    _, _, extra = dual.training_loss(images(), LABELS)
    assert float(extra["kappa_text"]) == pytest.approx(0.07) and float(extra["kappa_vis"]) == pytest.approx(0.01)


def test_vis_critic_may_differ_from_the_text_critic(clip_model):
    dual = build(clip_model, critic="cosine", vis_critic="bilinear")
    assert type(dual.text_critic).__name__ == "CosineCritic"
    assert type(dual.vis_critic).__name__ == "BilinearCritic"


def test_hand_crafted_features_are_computed_once_per_class_set(clip_model):
    dual = build(clip_model)
    counter = CallCounter(dual.text_encoder)
    for _ in range(3):
        dual.training_loss(images(), LABELS)
    # One pass per template, once; then the soft view's one pass per step.
    assert counter.calls == len(TEMPLATES) + 3
    assert dual.cache.computed == 1
    dual.options.infer_beta = 0.5
    dual.class_weights()
    assert counter.calls == len(TEMPLATES) + 4
    dual.set_classnames(NEW)
    dual.class_weights()
    dual.class_weights()
    assert counter.calls == 2 * len(TEMPLATES) + 6 and dual.cache.computed == 2
    dual.set_classnames(BASE)
    dual.training_loss(images(), LABELS)
    assert counter.calls == 2 * len(TEMPLATES) + 7 and dual.cache.computed == 2


def test_without_text_mi_and_beta_the_hand_crafted_view_never_runs(clip_model):
    dual = build(clip_model, w_text_mi=0.0)
    counter = CallCounter(dual.text_encoder)
    dual.training_loss(images(), LABELS)
    dual.class_weights()
    assert counter.calls == 2 and dual.cache.computed == 0


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_inference_blends_the_views_with_beta(clip_model, beta):
    coop = CoOpCLIP(clip_model, BASE, n_ctx=4, ctx_init="a photo of a")
    dual = build(clip_model, infer_beta=beta)
    same_context(coop, dual)
    with torch.no_grad():
        soft = coop.class_weights()
        hand = template_features(clip_model, dual.text_encoder, BASE, TEMPLATES)
        expected = F.normalize((1 - beta) * soft + beta * hand, dim=-1)
        assert torch.allclose(dual.class_weights(), expected, atol=1e-6)
        x = images()
        assert torch.allclose(dual.eval()(x), coop.logit_scale * coop.encode_image(x) @ expected.t(), atol=1e-4)


def test_a_context_learned_on_base_classes_evaluates_on_new_ones(clip_model):
    """What --eval-only on new classes does: a new model for the new names, the learned parameters loaded."""
    trained = build(clip_model, critic="bilinear", infer_beta=0.5)
    optimizer = torch.optim.SGD([p for p in trained.parameters() if p.requires_grad], lr=0.5)
    loss, _, _ = trained.training_loss(images(), LABELS)
    loss.backward()
    optimizer.step()
    checkpoint = {n: p.detach().clone() for n, p in trained.named_parameters() if p.requires_grad}
    assert sorted(checkpoint) == ["prompt_learner.ctx", "text_critic.temperature.log_kappa", "text_critic.weight",
                                  "vis_critic.temperature.log_kappa", "vis_critic.weight"]

    evaluated = build(clip_model, classnames=NEW, critic="bilinear", infer_beta=0.5)
    missing, unexpected = evaluated.load_state_dict(checkpoint, strict=False)
    assert not unexpected and not set(missing) & set(learned_names(evaluated))
    coop = CoOpCLIP(clip_model, NEW, n_ctx=4, ctx_init="a photo of a")
    with torch.no_grad():
        coop.prompt_learner.ctx.copy_(checkpoint["prompt_learner.ctx"])
        soft_new = coop.class_weights()
        hand_new = template_features(clip_model, evaluated.text_encoder, NEW, TEMPLATES)
        expected = F.normalize(0.5 * soft_new + 0.5 * hand_new, dim=-1)
        assert torch.allclose(evaluated.class_weights(), expected, atol=1e-6)


def test_reference_mode_gives_the_same_loss_and_gradient(clip_model):
    ours, reference = build(clip_model), build(clip_model)
    reference.reference_mode = True
    same_context(ours, reference)
    results = []
    for model in (ours, reference):
        torch.manual_seed(3)
        loss, logits, extra = model.training_loss(images(), LABELS)
        loss.backward()
        results.append((loss, logits, model.prompt_learner.ctx.grad))
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3)


def test_class_specific_context(clip_model):
    dual = build(clip_model, csc=True)
    assert dual.prompt_learner.ctx.shape[0] == len(BASE)
    assert dual.class_specific_parameters() == ("prompt_learner.ctx",)
    loss, _, _ = dual.training_loss(images(), LABELS)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("options,message", [
    (dict(estimator="nce"), "ESTIMATOR must be one of infonce, jsd, dv"),
    (dict(vis_estimator="mine"), "VIS_ESTIMATOR must be one of"),
    (dict(critic="dot"), "CRITIC must be one of cosine, bilinear, mlp"),
    (dict(vis_critic="dot"), "VIS_CRITIC must be one of"),
    (dict(mix_mode="both"), "MIX_MODE must be one of inter, intra"),
    (dict(mix_space="latent"), "MIX_SPACE must be one of feature, pixel"),
    (dict(templates="all"), "TEMPLATES must be one of dataset, ensemble"),
    (dict(w_text_mi=-1.0), "W_TEXT_MI must be >= 0"),
    (dict(alpha=0.0), "ALPHA must be positive"),
    (dict(kappa_init=0.0), "KAPPA_INIT must be positive"),
    (dict(infer_beta=1.5), r"INFER_BETA must lie in \[0, 1\]"),
])
def test_bad_options_are_refused_with_the_key_named(options, message):
    with pytest.raises(ValueError, match=message):
        DualMIOptions(**options)


# ----- the options that keep the dual view alive (each off by default) -----
def test_with_the_new_options_off_the_loss_is_the_sum_of_the_original_terms(clip_model):
    dual = build(clip_model)
    same_context(dual)
    torch.manual_seed(3)
    loss, logits, extra = dual.training_loss(images(), LABELS)
    options = dual.options
    expected = extra["loss_ce"] + options.w_text_mi * extra["loss_tmi"] + options.w_vis_mi * extra["loss_vmi"]
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    assert set(dual.last_terms) == {"ce", "text_mi", "vis_mi"}
    assert "loss_align" not in extra and "loss_consist" not in extra


def test_alignment_term_is_one_minus_the_mean_cosine(clip_model):
    dual = build(clip_model, w_text_mi=0.0, w_vis_mi=0.0, w_align=8.0)
    same_context(dual)
    loss, _, extra = dual.training_loss(images(), LABELS)
    with torch.no_grad():
        soft = dual.soft_features().double()
        hand = dual.hand_crafted_features().double()
    cosines = [float(F.cosine_similarity(soft[c], hand[c], dim=0)) for c in range(len(BASE))]
    expected = 1 - sum(cosines) / len(cosines)
    assert float(extra["loss_align"]) == pytest.approx(expected, rel=1e-5)
    assert float(extra["cos_soft_hand"]) == pytest.approx(1 - expected, rel=1e-5)
    assert float(loss) == pytest.approx(float(extra["loss_ce"]) + 8.0 * expected, rel=1e-5)


def kl_rows(features, soft, hand, scale):
    """KL(softmax(scale x.h) || softmax(scale x.s)) per image, written out."""
    total = 0.0
    for x in features.double():
        p = torch.softmax(scale * hand.double() @ x, 0)
        q = torch.softmax(scale * soft.double() @ x, 0)
        total += float((p * (p.log() - q.log())).sum())
    return total / len(features)


@pytest.mark.parametrize("with_visual", [False, True])
def test_consistency_term_is_the_kl_from_the_hand_crafted_view(clip_model, with_visual):
    dual = build(clip_model, w_text_mi=0.0, w_vis_mi=0.5 if with_visual else 0.0, w_consist=2.0)
    same_context(dual)
    x = images()
    torch.manual_seed(5)
    _, _, extra = dual.training_loss(x, LABELS)
    with torch.no_grad():
        features = dual.encode_image(x)
        soft, hand, scale = dual.soft_features(), dual.hand_crafted_features(), float(dual.logit_scale)
        expected = kl_rows(features, soft, hand, scale)
        if with_visual:
            torch.manual_seed(5)
            plan = plan_mix(LABELS, "inter", 1.0)
            mixed = F.normalize(plan.lam[:, None] * features + (1 - plan.lam[:, None]) * features[plan.partners], dim=-1)
            expected += kl_rows(mixed, soft, hand, scale)
    assert float(extra["loss_consist"]) == pytest.approx(expected, rel=1e-4)
    assert float(dual.last_terms["consist"]) == pytest.approx(2.0 * expected, rel=1e-4)


@pytest.mark.parametrize("term, options", [
    ("text_mi", dict(w_vis_mi=0.0)), ("vis_mi", dict(w_text_mi=0.0)), ("align", dict(w_align=1.0)),
    ("consist", dict(w_consist=1.0)),
])
def test_each_term_sends_its_own_gradient_to_the_context(clip_model, term, options):
    """The norm reported for a term is that of the gradient its formula gives the context (a detached soft view
    in any one term would make it zero)."""
    dual = build(clip_model, **options)
    same_context(dual)
    torch.manual_seed(2)
    dual.training_loss(images(), LABELS)
    norms = dual.context_gradient_norms()
    (grad,) = torch.autograd.grad(dual.last_terms[term], dual.prompt_learner.ctx, retain_graph=True)
    assert norms[f"grad_ctx_{term}"] == pytest.approx(float(grad.norm()), rel=1e-6)
    assert norms[f"grad_ctx_{term}"] > 0 and norms["grad_ctx_ce"] > 0


def test_a_temperature_at_its_floor_is_reported(clip_model):
    dual = build(clip_model, w_vis_mi=0.0, kappa_init=0.05, kappa_floor=0.05)
    _, _, extra = dual.training_loss(images(), LABELS)
    assert extra["kappa_text_at_floor"] == 1.0 and float(extra["kappa_text"]) == pytest.approx(0.05)
    with torch.no_grad():
        dual.text_critic.temperature.log_kappa.fill_(math.log(0.01))  # below the floor: held there
    _, _, extra = dual.training_loss(images(), LABELS)
    assert extra["kappa_text_at_floor"] == 1.0 and float(extra["kappa_text"]) == pytest.approx(0.05)
    _, _, extra = build(clip_model, w_vis_mi=0.0).training_loss(images(), LABELS)
    assert extra["kappa_text_at_floor"] == 0.0
    assert extra["mi_ceiling_text"] == pytest.approx(math.log(len(BASE)))
    with pytest.raises(ValueError, match="must not exceed KAPPA_INIT"):
        build(clip_model, kappa_init=0.01, kappa_floor=0.02)
    for bad in (dict(w_align=-1.0), dict(w_consist=-0.5), dict(kappa_floor=0.0)):
        with pytest.raises(ValueError):
            DualMIOptions(**bad)
