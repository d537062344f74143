"""MI estimators, critics and class-wise mixing (pure torch): each checked against its formula written here."""
import math

import pytest
import torch
import torch.nn.functional as F

from trainers.mutual_info import (
    KAPPA_MIN,
    MixPlan,
    build_critic,
    mi_loss,
    mix,
    mixed_prototypes,
    plan_mix,
    same_virtual_class,
    sample_lambda,
    sample_partners,
)


def random_scores(n, seed=0):
    return torch.randn(n, n, generator=torch.Generator().manual_seed(seed)) * 3


# ----- estimators: reference computations written from the formulas, one pair at a time -----
def reference_infonce(scores):
    n = len(scores)
    rows = sum(-math.log(math.exp(scores[i][i]) / sum(math.exp(scores[i][k]) for k in range(n))) for i in range(n))
    cols = sum(-math.log(math.exp(scores[k][k]) / sum(math.exp(scores[i][k]) for i in range(n))) for k in range(n))
    return (rows / n + cols / n) / 2


def softplus(t):
    return math.log1p(math.exp(t))


def reference_jsd(scores):
    n = len(scores)
    positives = [scores[i][i] for i in range(n)]
    negatives = [scores[i][k] for i in range(n) for k in range(n) if i != k]
    return sum(softplus(-t) for t in positives) / len(positives) + sum(softplus(t) for t in negatives) / len(negatives)


def reference_dv(scores):
    n = len(scores)
    positives = [scores[i][i] for i in range(n)]
    negatives = [scores[i][k] for i in range(n) for k in range(n) if i != k]
    return -(sum(positives) / n - math.log(sum(math.exp(t) for t in negatives) / len(negatives)))


@pytest.mark.parametrize("estimator,reference", [
    ("infonce", reference_infonce), ("jsd", reference_jsd), ("dv", reference_dv),
])
def test_estimator_equals_its_formula(estimator, reference):
    scores = random_scores(6)
    loss, bound = mi_loss(scores, estimator)
    expected = reference(scores.double().tolist())
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-5)
    expected_bound = {
        "infonce": math.log(6) - expected,
        "jsd": (math.log(4) - expected) / 2,
        "dv": -expected,
    }[estimator]
    assert float(bound) == pytest.approx(expected_bound, rel=1e-5, abs=1e-5)


def test_infonce_bound_approaches_log_c_from_below_with_a_perfect_critic():
    c = 8
    bounds = []
    for margin in (1.0, 5.0, 20.0, 60.0):
        loss, bound = mi_loss(torch.eye(c) * margin, "infonce")
        assert float(bound) < math.log(c)
        bounds.append(float(bound))
    assert bounds == sorted(bounds)
    assert bounds[-1] == pytest.approx(math.log(c), abs=1e-6)


def test_infonce_with_a_constant_critic_is_log_c():
    c = 8
    loss, bound = mi_loss(torch.full((c, c), 3.7), "infonce")
    assert loss.item() == pytest.approx(math.log(c), rel=1e-6)
    assert float(bound) == pytest.approx(0.0, abs=1e-6)


def test_same_pairs_are_left_out_of_the_negatives():
    scores = random_scores(5, seed=1)
    same = torch.zeros(5, 5, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True  # items 0 and 1 are the same class: not negatives of each other
    s = scores.double()
    rows = cols = 0.0
    for i in range(5):
        keep = [k for k in range(5) if not same[i, k]]
        rows += -(s[i, i] - torch.logsumexp(s[i, keep], 0))
        cols += -(s[i, i] - torch.logsumexp(s[keep, i], 0))
    expected = (rows + cols) / 10
    loss, bound = mi_loss(scores, "infonce", same)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # Rows 0 and 1 have 4 candidates, the others 5.
    assert float(bound) == pytest.approx((2 * math.log(4) + 3 * math.log(5)) / 5 - expected.item(), rel=1e-5)
    negatives = [s[i, k] for i in range(5) for k in range(5) if i != k and not same[i, k]]
    jsd_expected = F.softplus(-s.diagonal()).mean() + F.softplus(torch.stack(negatives)).mean()
    assert mi_loss(scores, "jsd", same)[0].item() == pytest.approx(jsd_expected.item(), rel=1e-5)


@pytest.mark.parametrize("estimator", ["infonce", "jsd", "dv"])
def test_no_negatives_gives_zero_loss_with_a_graph(estimator):
    scores = random_scores(3).requires_grad_()
    loss, bound = mi_loss(scores, estimator, same=torch.ones(3, 3, dtype=torch.bool))
    assert loss.item() == 0 and float(bound) == 0
    loss.backward()
    assert torch.equal(scores.grad, torch.zeros(3, 3))


def test_bad_estimator_and_shape_are_refused():
    with pytest.raises(ValueError, match="ESTIMATOR must be one of infonce, jsd, dv"):
        mi_loss(torch.zeros(2, 2), "nce")
    with pytest.raises(ValueError, match="square"):
        mi_loss(torch.zeros(2, 3))


# ----- critics -----
def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_cosine_critic_is_cosine_over_kappa():
    a, b = torch.randn(4, 16), torch.randn(5, 16)
    critic = build_critic("cosine", 16, kappa_init=0.07)
    expected = torch.tensor([[F.cosine_similarity(a[i], b[k], dim=0).item() / 0.07 for k in range(5)]
                             for i in range(4)])
    assert torch.allclose(critic(a, b), expected, atol=1e-4)
    assert [n for n, _ in critic.named_parameters()] == ["temperature.log_kappa"]


def test_bilinear_critic_is_s_w_h_over_kappa_and_starts_as_cosine():
    a, b = unit(4, 16, 0), unit(5, 16, 1)
    critic = build_critic("bilinear", 16, kappa_init=0.1)
    assert torch.allclose(critic(a, b), a @ b.t() / 0.1, atol=1e-5)
    with torch.no_grad():
        critic.weight.copy_(torch.randn(16, 16))
    expected = torch.tensor([[(a[i] @ critic.weight @ b[k]).item() / 0.1 for k in range(5)] for i in range(4)])
    assert torch.allclose(critic(a, b), expected, atol=1e-4)


def test_mlp_critic_is_cosine_of_two_projection_heads():
    a, b = unit(4, 16, 0), unit(5, 16, 1)
    critic = build_critic("mlp", 16, kappa_init=0.07, hidden=8)
    # Zero-initialised output layers: it starts as the cosine critic.
    assert torch.allclose(critic(a, b), a @ b.t() / 0.07, atol=1e-4)
    for head in (critic.head_a, critic.head_b):
        torch.nn.init.normal_(head.out.weight)
        torch.nn.init.normal_(head.out.bias)

    def p(z, head):
        return z + head.out.weight @ torch.relu(head.hidden.weight @ z + head.hidden.bias) + head.out.bias

    expected = torch.tensor([[F.cosine_similarity(p(a[i], critic.head_a), p(b[k], critic.head_b), dim=0).item() / 0.07
                              for k in range(5)] for i in range(4)])
    assert torch.allclose(critic(a, b), expected, atol=1e-4)
    assert critic.head_a.hidden.out_features == 8


def test_temperature_fixed_or_learnable_and_bounded():
    learnable = build_critic("cosine", 8, kappa_init=0.07, learn_kappa=True)
    fixed = build_critic("cosine", 8, kappa_init=0.07, learn_kappa=False)
    assert learnable.temperature().item() == pytest.approx(0.07)
    assert [n for n, p in fixed.named_parameters()] == []
    assert "temperature.log_kappa" not in fixed.state_dict()
    a, b = unit(3, 8, 0), unit(3, 8, 1)
    mi_loss(learnable(a, b))[0].backward()
    assert learnable.temperature.log_kappa.grad is not None
    with torch.no_grad():
        learnable.temperature.log_kappa.fill_(math.log(1e-6))
    assert learnable.temperature().item() == pytest.approx(KAPPA_MIN)
    with pytest.raises(ValueError, match="must be positive"):
        build_critic("cosine", 8, kappa_init=0.0)
    with pytest.raises(ValueError, match="CRITIC must be one of cosine, bilinear, mlp"):
        build_critic("dot", 8)


# ----- class-wise mixing -----
LABELS = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3])


def test_intra_partners_share_the_label_and_differ_from_the_sample():
    torch.manual_seed(0)
    for _ in range(20):
        partners, has_partner = sample_partners(LABELS, "intra")
        assert torch.equal(LABELS[partners], LABELS)
        # Class 2 appears once: that sample has no partner and is its own; every other one has another sample.
        assert has_partner.tolist() == [True, True, True, True, True, False, True, True]
        assert partners[5] == 5
        assert (partners[has_partner] != torch.arange(8)[has_partner]).all()


def test_inter_partners_never_share_the_label_and_cover_every_valid_choice():
    torch.manual_seed(0)
    seen = set()
    for _ in range(200):
        partners, has_partner = sample_partners(LABELS, "inter")
        assert has_partner.all()
        assert (LABELS[partners] != LABELS).all()
        seen.add(int(partners[0]))
    assert seen == {2, 3, 4, 5, 6, 7}  # uniform among the samples of other classes: all of them come up


def test_single_class_batch_in_inter_mode_is_unmixed():
    labels = torch.tensor([4, 4, 4])
    torch.manual_seed(0)
    plan = plan_mix(labels, "inter", alpha=1.0)
    assert plan.partners.tolist() == [0, 1, 2] and not plan.has_partner.any()
    assert torch.equal(plan.lam, torch.ones(3))
    features = F.normalize(torch.randn(3, 6), dim=-1)
    assert torch.allclose(mix(features, plan), features)
    # Every prototype is the same class: no negatives, so the visual MI term is zero for this batch.
    same = same_virtual_class(labels, plan, "inter")
    assert same.all()
    assert mi_loss(torch.randn(3, 3), "infonce", same)[0].item() == 0


def test_mixed_features_and_prototypes_follow_the_formulas():
    class_features = F.normalize(torch.randn(4, 6), dim=-1)
    features = F.normalize(torch.randn(8, 6), dim=-1)
    plan = MixPlan(torch.tensor([2, 5, 0, 6, 1, 3, 4, 0]), torch.linspace(0.1, 0.8, 8), torch.ones(8, dtype=torch.bool))
    mixed = mix(features, plan)
    prototypes = mixed_prototypes(class_features, LABELS, plan, "inter")
    for i in range(8):
        j, lam = int(plan.partners[i]), float(plan.lam[i])
        assert torch.allclose(mixed[i], lam * features[i] + (1 - lam) * features[j], atol=1e-6)
        expected = F.normalize(lam * class_features[LABELS[i]] + (1 - lam) * class_features[LABELS[j]], dim=0)
        assert torch.allclose(prototypes[i], expected, atol=1e-6)
    assert torch.allclose(prototypes.norm(dim=-1), torch.ones(8))
    intra = mixed_prototypes(class_features, LABELS, plan, "intra")
    assert torch.equal(intra, class_features[LABELS])
    images = torch.randn(8, 3, 4, 4)
    mixed_images = mix(images, plan)
    assert torch.allclose(mixed_images[3], 0.4 * images[3] + 0.6 * images[6], atol=1e-6)


def test_same_virtual_class():
    plan = MixPlan(torch.tensor([2, 2, 0, 0]), torch.tensor([0.3, 0.3, 0.7, 0.5]), torch.ones(4, dtype=torch.bool))
    labels = torch.tensor([0, 0, 1, 1])
    same = same_virtual_class(labels, plan, "inter")
    # 0 and 1 are both (0, 1, 0.3); 2 is (1, 0, 0.7) = (0, 1, 0.3) swapped; 3 is (1, 0, 0.5), unique.
    expected = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0], [1, 1, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    assert torch.equal(same, expected)
    assert torch.equal(same_virtual_class(labels, plan, "intra"), labels[:, None] == labels[None, :])


def beta_cdf(x, alpha):
    # Closed forms of the regularised incomplete beta function for the three parameters tested.
    if alpha == 1.0:
        return x
    if alpha == 2.0:
        return 3 * x**2 - 2 * x**3
    if alpha == 0.5:
        return 2 / math.pi * torch.asin(x.sqrt())
    raise ValueError(alpha)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
def test_lambda_follows_the_configured_beta_distribution(alpha):
    torch.manual_seed(0)
    n = 20000
    lam = sample_lambda(n, alpha).double().sort().values
    empirical_hi = torch.arange(1, n + 1, dtype=torch.double) / n
    cdf = beta_cdf(lam, alpha)
    ks = max((empirical_hi - cdf).abs().max().item(), (cdf - (empirical_hi - 1 / n)).abs().max().item())
    assert ks < 1.95 / math.sqrt(n)  # Kolmogorov-Smirnov at the 0.1% level
    # And it is not another Beta: the statistic against alpha' = 2 alpha (or alpha / 2) is far out.
    other = {0.5: 1.0, 1.0: 2.0, 2.0: 1.0}[alpha]
    assert (empirical_hi - beta_cdf(lam, other)).abs().max().item() > 5 / math.sqrt(n)
    with pytest.raises(ValueError, match="ALPHA"):
        sample_lambda(3, 0.0)


def test_plan_mix_uses_the_lambda_draws_for_samples_with_a_partner():
    torch.manual_seed(3)
    plan = plan_mix(LABELS, "intra", alpha=2.0)
    assert plan.lam[5] == 1.0  # the singleton class
    assert ((plan.lam[plan.has_partner] > 0) & (plan.lam[plan.has_partner] < 1)).all()
