"""Mutual-information estimators, critics and class-wise mixing for DualMIPrompt (pure torch, no Dassl).

A critic ``T`` scores every pair of two sets of features: ``scores[i, k] = T(a_i, b_k)``. The pairs on the diagonal
are the positives (drawn from the joint distribution, e.g. the soft and hand-crafted features of the same class);
the off-diagonal pairs are the negatives (drawn from the product of the marginals). An optional boolean ``same``
matrix marks off-diagonal pairs that are *not* negatives because the two items are the same (virtual) class; they
are left out of every estimator.

Each estimator returns ``(loss, bound)``: the loss to minimise and the lower bound it certifies, in nats:
- ``infonce``: ``L = 1/2 [CE(M, I) + CE(M^T, I)]``, ``bound = mean_i log K_i - L`` (``K_i``: candidates of row
  ``i``, ``C`` when every other class is a negative, so the bound is ``log C - L`` and never exceeds ``log C``);
- ``jsd`` (Deep InfoMax): ``L = E_pos softplus(-T) + E_neg softplus(T)``; ``bound = (log 4 - L) / 2`` lower-bounds
  the Jensen-Shannon divergence between the joint and the product of marginals (at most ``log 2``);
- ``dv`` (Donsker-Varadhan, as in MINE): ``L = -(E_pos T - log E_neg exp T)``, ``bound = -L``.
Without any negative there is nothing to contrast: every estimator then returns a zero loss and a zero bound.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ESTIMATORS = ("infonce", "jsd", "dv")
CRITICS = ("cosine", "bilinear", "mlp")
MIX_MODES = ("inter", "intra")
MIX_SPACES = ("feature", "pixel")

# The default floor of a learnable temperature: scores stay within 1/KAPPA_MIN = 200 (twice CLIP's own largest
# logit scale), so the critic cannot sharpen itself into overflow. Each critic may set its own (KAPPA_FLOOR,
# VIS_KAPPA_FLOOR); a temperature held at its floor is reported (``at_floor``), never silent.
KAPPA_MIN = 0.005


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


class Temperature(nn.Module):
    """``kappa`` (> 0), stored as its logarithm so that a learnable one stays positive; never below ``floor``."""

    def __init__(self, init=0.07, learnable=True, floor=KAPPA_MIN):
        super().__init__()
        if not init > 0:
            raise ValueError(f"The critic temperature (KAPPA_INIT / VIS_KAPPA_INIT) must be positive; got {init}")
        if not 0 < floor <= init:
            raise ValueError(f"A temperature floor (KAPPA_FLOOR / VIS_KAPPA_FLOOR) must be positive and at most the "
                             f"initial temperature {init}; got {floor}")
        self.floor = float(floor)
        log_kappa = torch.tensor(math.log(init), dtype=torch.float32)
        if learnable:
            self.log_kappa = nn.Parameter(log_kappa)
        else:
            self.register_buffer("log_kappa", log_kappa, persistent=False)

    def forward(self):
        return self.log_kappa.exp().clamp(min=self.floor)

    def at_floor(self):
        """1.0 while the temperature is held at its floor (its gradient is then zero), else 0.0."""
        return float(self.log_kappa.detach().exp() <= self.floor * (1 + 1e-6))


class CosineCritic(nn.Module):
    """``T(a, b) = cos(a, b) / kappa``: no parameters besides a learnable ``kappa``."""

    def __init__(self, dim, kappa_init=0.07, learn_kappa=True, hidden=0, kappa_floor=KAPPA_MIN):
        super().__init__()
        self.temperature = Temperature(kappa_init, learn_kappa, kappa_floor)

    def project(self, a, b):
        return F.normalize(a, dim=-1), F.normalize(b, dim=-1)

    def forward(self, a, b):
        a, b = self.project(a.float(), b.float())
        return a @ b.t() / self.temperature()


class BilinearCritic(nn.Module):
    """``T(a, b) = a^T W b / kappa`` with ``W`` initialised to the identity (so it starts as the cosine critic on
    the unit-norm features it receives)."""

    def __init__(self, dim, kappa_init=0.07, learn_kappa=True, hidden=0, kappa_floor=KAPPA_MIN):
        super().__init__()
        self.weight = nn.Parameter(torch.eye(dim))
        self.temperature = Temperature(kappa_init, learn_kappa, kappa_floor)

    def forward(self, a, b):
        return a.float() @ self.weight @ b.float().t() / self.temperature()


class ResidualHead(nn.Module):
    """``z + W2 relu(W1 z + b1) + b2`` with ``W2, b2 = 0``: a small projection head that starts as the identity."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.hidden = nn.Linear(dim, hidden)
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z):
        return z + self.out(F.relu(self.hidden(z)))


class MLPCritic(CosineCritic):
    """``T(a, b) = cos(p(a), q(b)) / kappa`` with two small projection heads ``p`` and ``q`` (``hidden`` units).

    The heads are residual with a zero-initialised output layer, so the critic starts as the cosine critic instead
    of comparing two random projections.
    """

    def __init__(self, dim, kappa_init=0.07, learn_kappa=True, hidden=128, kappa_floor=KAPPA_MIN):
        super().__init__(dim, kappa_init, learn_kappa, kappa_floor=kappa_floor)
        if hidden < 1:
            raise ValueError(f"The mlp critic needs CRITIC_HIDDEN >= 1 hidden units; got {hidden}")
        self.head_a = ResidualHead(dim, hidden)
        self.head_b = ResidualHead(dim, hidden)

    def project(self, a, b):
        return F.normalize(self.head_a(a), dim=-1), F.normalize(self.head_b(b), dim=-1)


_CRITIC_CLASSES = {"cosine": CosineCritic, "bilinear": BilinearCritic, "mlp": MLPCritic}


def build_critic(kind, dim, kappa_init=0.07, learn_kappa=True, hidden=128, kappa_floor=KAPPA_MIN):
    check_choice("CRITIC", kind, CRITICS)
    return _CRITIC_CLASSES[kind](dim, kappa_init, learn_kappa, hidden, kappa_floor)


def negative_mask(n, same=None, device=None):
    """Which pairs of an ``n x n`` score matrix are negatives: off-diagonal and not marked ``same``."""
    negatives = ~torch.eye(n, dtype=torch.bool, device=device)
    if same is not None:
        negatives &= ~same.to(device=device, dtype=torch.bool)
    return negatives


def _zero(scores):
    # Keeps the graph (and the dtype/device) so that callers can always add the loss and call backward.
    return scores.sum() * 0, scores.new_zeros(())


def infonce(scores, negatives):
    masked = scores.masked_fill(~(negatives | torch.eye(len(scores), dtype=torch.bool, device=scores.device)),
                                float("-inf"))
    positive = scores.diagonal()
    rows = (masked.logsumexp(dim=1) - positive).mean()
    cols = (masked.logsumexp(dim=0) - positive).mean()
    loss = (rows + cols) / 2
    candidates = negatives.sum(dim=1).float() + 1
    return loss, candidates.log().mean() - loss.detach()


def jsd(scores, negatives):
    loss = F.softplus(-scores.diagonal()).mean() + F.softplus(scores[negatives]).mean()
    return loss, (math.log(4) - loss.detach()) / 2


def donsker_varadhan(scores, negatives):
    marginal = scores[negatives]
    log_mean_exp = marginal.logsumexp(dim=0) - math.log(marginal.numel())
    loss = -(scores.diagonal().mean() - log_mean_exp)
    return loss, -loss.detach()


_ESTIMATOR_FUNCTIONS = {"infonce": infonce, "jsd": jsd, "dv": donsker_varadhan}


def mi_ceiling(estimator, candidates):
    """The largest value an estimator's bound can certify with ``candidates`` items per row (positive included):
    ``log candidates`` for InfoNCE, ``log 2`` for the JSD bound; None for Donsker-Varadhan (unbounded)."""
    check_choice("ESTIMATOR", estimator, ESTIMATORS)
    return {"infonce": math.log(candidates) if candidates > 1 else 0.0, "jsd": math.log(2), "dv": None}[estimator]


def mi_loss(scores, estimator="infonce", same=None):
    """``(loss, bound)`` of ``estimator`` for a square critic matrix whose diagonal holds the positive pairs."""
    check_choice("ESTIMATOR", estimator, ESTIMATORS)
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"The critic matrix must be square (positives on its diagonal); got {tuple(scores.shape)}")
    scores = scores.float()
    negatives = negative_mask(len(scores), same, scores.device)
    if not negatives.any():
        return _zero(scores)
    return _ESTIMATOR_FUNCTIONS[estimator](scores, negatives)


# ----- class-wise mixing -----
class MixPlan:
    """Who mixes with whom and how much: ``partners[i]`` and ``lam[i]`` give
    ``mixed_i = lam_i * z_i + (1 - lam_i) * z_{partners[i]}``. A sample without a valid partner (``inter`` in a
    batch of one class, ``intra`` for a class seen once in the batch) is its own partner with ``lam = 1``: it enters
    the visual MI term unmixed, as the pair (its own feature, its own class prototype)."""

    def __init__(self, partners, lam, has_partner):
        self.partners = partners
        self.lam = lam
        self.has_partner = has_partner


def sample_partners(labels, mode):
    """A partner for every sample, uniformly among the valid ones, in one batched draw (no loop over the batch):
    ``inter``: a sample of another class; ``intra``: another sample of the same class."""
    check_choice("MIX_MODE", mode, MIX_MODES)
    n = len(labels)
    same_label = labels[:, None] == labels[None, :]
    if mode == "inter":
        valid = ~same_label
    else:
        valid = same_label & ~torch.eye(n, dtype=torch.bool, device=labels.device)
    # The argmax of i.i.d. uniform draws restricted to the valid entries is a uniform choice among them.
    draws = torch.rand(n, n, device=labels.device).masked_fill(~valid, -1.0)
    has_partner = valid.any(dim=1)
    own = torch.arange(n, device=labels.device)
    return torch.where(has_partner, draws.argmax(dim=1), own), has_partner


def sample_lambda(count, alpha, device=None):
    """``lambda ~ Beta(alpha, alpha)``, one per sample."""
    if not alpha > 0:
        raise ValueError(f"ALPHA (the Beta(alpha, alpha) mixing parameter) must be positive; got {alpha}")
    concentration = torch.tensor(float(alpha), device=device)
    return torch.distributions.Beta(concentration, concentration).sample((count,))


def plan_mix(labels, mode, alpha):
    partners, has_partner = sample_partners(labels, mode)
    lam = sample_lambda(len(labels), alpha, labels.device)
    lam = torch.where(has_partner, lam, torch.ones_like(lam))
    return MixPlan(partners, lam, has_partner)


def mix(values, plan):
    """``lam * v_i + (1 - lam) * v_partner`` for features ``[B, D]`` or images ``[B, 3, H, W]``."""
    lam = plan.lam.to(values.dtype).view(-1, *([1] * (values.dim() - 1)))
    return lam * values + (1 - lam) * values[plan.partners]


def mixed_prototypes(class_features, labels, plan, mode):
    """The text prototype of each mixed feature: ``norm(lam s_{y_i} + (1 - lam) s_{y_j})`` (``inter``, a virtual
    class between the two) or ``s_{y_i}`` (``intra``: both samples are of class ``y_i``)."""
    check_choice("MIX_MODE", mode, MIX_MODES)
    own = class_features[labels]
    if mode == "intra":
        return own
    return F.normalize(mix(own, plan), dim=-1)


def same_virtual_class(labels, plan, mode):
    """``[B, B]``: whether two mixed samples have the same prototype, hence are not negatives of each other."""
    if mode == "intra":
        return labels[:, None] == labels[None, :]
    first, second, lam = labels, labels[plan.partners], plan.lam
    same_order = (first[:, None] == first[None, :]) & (second[:, None] == second[None, :]) & (
        lam[:, None] == lam[None, :])
    swapped = (first[:, None] == second[None, :]) & (second[:, None] == first[None, :]) & (
        lam[:, None] == 1 - lam[None, :])
    return same_order | swapped
