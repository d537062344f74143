"""DualMIPrompt's model: soft and hand-crafted text views tied by mutual information (no Dassl needed).

- Soft view: ``s_c = norm(g([SOS] V [name_c] . [EOS]))`` with learnable context ``V`` (CoOp's prompts). It is the
  only view that classifies during training: ``L_ce = CE(tau x S^T, y)``.
- Hand-crafted view: ``h_c = norm(mean_k norm(g(template_k(name_c))))``, frozen, computed once per class set.
- Dual-view MI: ``L_tmi``, an MI estimator over ``M[c, k] = T(s_c, h_k)`` (the other classes are the negatives).
- Class-wise visual augmentation: mixed image features ``x~`` tied to mixed soft prototypes ``p~`` by ``L_vmi``, an
  MI estimator with its own critic.
- Alignment (optional): ``L_align = mean_c (1 - cos(s_c, h_c))``, the alignment half of InfoNCE (KgCoOp, CVPR
  2023, uses it alone): it keeps pulling the soft view towards the hand-crafted one after the ranking that
  InfoNCE asks for holds.
- Consistency (optional): ``L_cons = KL(p_h(x) || p_s(x)) [+ KL(p_h(x~) || p_s(x~))]``, the class distributions
  that the hand-crafted and the soft view give an image (at CLIP's logit scale, temperature 1), on the image
  features and, when the visual term is on, on the mixed features too (so the augmentation is tied to the
  hand-crafted view as well).
- ``L = L_ce + W_TEXT_MI L_tmi + W_VIS_MI L_vmi + W_ALIGN L_align + W_CONSIST L_cons``; inference uses
  ``w_c = norm((1 - beta) s_c + beta h_c)``.
A weight at 0 removes its term (and its critic), so ``W_TEXT_MI = W_VIS_MI = 0`` (and the new weights at their
default 0) is CoOp with the same context.
"""
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from .encoders import PromptedCLIP, TemplateFeatureCache
from .mutual_info import (
    CRITICS,
    ESTIMATORS,
    KAPPA_MIN,
    MIX_MODES,
    MIX_SPACES,
    build_critic,
    check_choice,
    mi_ceiling,
    mi_loss,
    mix,
    mixed_prototypes,
    plan_mix,
    same_virtual_class,
)
from .prompts import POSITIONS, ContextPrompts
from .registry import declare

TEMPLATE_KINDS = ("dataset", "ensemble")


@dataclass
class DualMIOptions:
    """Every option of the method; the config node ``TRAINER.DUALMIPROMPT`` holds the same keys in upper case,
    with these defaults (see docs/method.md for the reasoning behind each)."""

    n_ctx: int = 4  # context tokens (ignored when CTX_INIT gives the words)
    ctx_init: str = "a photo of a"  # words whose embeddings initialise the context ("" = random N(0, 0.02))
    csc: bool = False  # class-specific context (cannot transfer to new classes)
    class_token_position: str = "end"  # end, middle or front
    templates: str = "dataset"  # hand-crafted view: "dataset" (its own template) or "ensemble" (CLIP's 7 + it)
    w_text_mi: float = 1.0  # weight of the dual-view (soft / hand-crafted) MI loss; 0 switches it off
    w_vis_mi: float = 0.1  # weight of the class-wise visual augmentation MI loss (chosen on validation folds); 0: off
    estimator: str = "infonce"  # estimator of the dual-view MI: infonce, jsd or dv
    critic: str = "cosine"  # critic of both MI terms (each term has its own instance): cosine, bilinear or mlp
    vis_estimator: str = "infonce"  # estimator of the visual MI term
    vis_critic: str = ""  # critic of the visual MI term; "" = the same kind as CRITIC
    kappa_init: float = 0.07  # initial temperature of the dual-view critic
    vis_kappa_init: float = 0.01  # initial temperature of the visual critic (CLIP's own: 1 / logit scale 100)
    learn_kappa: bool = True  # learn the dual-view critic's temperature (False: fixed at KAPPA_INIT)
    vis_learn_kappa: bool = True  # learn the visual critic's temperature (False: fixed at VIS_KAPPA_INIT)
    kappa_floor: float = KAPPA_MIN  # the dual-view temperature never falls below this (reported when it sits there)
    vis_kappa_floor: float = KAPPA_MIN  # the same for the visual critic
    w_align: float = 0.0  # weight of the alignment term mean_c (1 - cos(s_c, h_c)); 0 switches it off
    w_consist: float = 0.0  # weight of the soft / hand-crafted logit consistency (KL); 0 switches it off
    critic_hidden: int = 128  # hidden units of each projection head of the mlp critic
    mix_mode: str = "inter"  # partner of each image: "inter" (another class) or "intra" (the same class)
    mix_space: str = "feature"  # mix normalised image features ("feature") or images before the encoder ("pixel")
    alpha: float = 1.0  # lambda ~ Beta(alpha, alpha); 1.0 is uniform on [0, 1]
    infer_beta: float = 0.0  # inference weights norm((1 - beta) s + beta h); 0 = soft view only
    gpa_mean: float = 0.0  # Gaussian aggregation of the context over epochs, centred on this epoch; 0 switches it off
    gpa_std: float = 1.0  # its spread in epochs (0: the single epoch nearest GPA_MEAN)

    def __post_init__(self):
        check_choice("CLASS_TOKEN_POSITION", self.class_token_position, POSITIONS)
        check_choice("TEMPLATES", self.templates, TEMPLATE_KINDS)
        check_choice("ESTIMATOR", self.estimator, ESTIMATORS)
        check_choice("VIS_ESTIMATOR", self.vis_estimator, ESTIMATORS)
        check_choice("CRITIC", self.critic, CRITICS)
        if self.vis_critic:
            check_choice("VIS_CRITIC", self.vis_critic, CRITICS)
        check_choice("MIX_MODE", self.mix_mode, MIX_MODES)
        check_choice("MIX_SPACE", self.mix_space, MIX_SPACES)
        for name in ("w_text_mi", "w_vis_mi", "w_align", "w_consist"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.upper()} must be >= 0 (0 switches the term off); got {getattr(self, name)}")
        for name in ("kappa_init", "vis_kappa_init", "alpha", "kappa_floor", "vis_kappa_floor"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name.upper()} must be positive; got {getattr(self, name)}")
        for floor, init in (("kappa_floor", "kappa_init"), ("vis_kappa_floor", "vis_kappa_init")):
            if getattr(self, floor) > getattr(self, init):
                raise ValueError(f"{floor.upper()} ({getattr(self, floor)}) must not exceed {init.upper()} "
                                 f"({getattr(self, init)}): a temperature starts at or above its floor")
        if self.gpa_mean < 0 or self.gpa_std < 0:
            raise ValueError(f"GPA_MEAN (0: off) and GPA_STD must be >= 0; got {self.gpa_mean}, {self.gpa_std}")
        if not 0 <= self.infer_beta <= 1:
            raise ValueError(f"INFER_BETA must lie in [0, 1]; got {self.infer_beta}")

    @classmethod
    def from_node(cls, node):
        """From a config node with the upper-case keys (e.g. ``cfg.TRAINER.DUALMIPROMPT``)."""
        return cls(**{f.name: node[f.name.upper()] for f in fields(cls)})

    @classmethod
    def defaults(cls):
        """``{KEY: default}`` for the config node."""
        return {f.name.upper(): f.default for f in fields(cls)}


class DualMIPromptCLIP(PromptedCLIP):
    """Frozen CLIP, CoOp's learnable context (the soft view), cached template features (the hand-crafted view)
    and the critics of the two MI terms."""

    def __init__(self, clip_model, classnames, templates, options=None):
        super().__init__(clip_model)
        self.options = options = options or DualMIOptions()
        if not templates:
            raise ValueError("The hand-crafted view needs at least one template")
        self.templates = tuple(templates)
        self.prompt_learner = ContextPrompts(
            clip_model, classnames, options.n_ctx, options.ctx_init, options.csc, options.class_token_position
        )
        self.classnames = list(classnames)
        self.cache = TemplateFeatureCache()
        dim = clip_model.text_projection.shape[1]
        # A term switched off has no critic: nothing unused is learned or saved.
        self.text_critic = self.vis_critic = None
        if options.w_text_mi > 0:
            self.text_critic = build_critic(
                options.critic, dim, options.kappa_init, options.learn_kappa, options.critic_hidden,
                options.kappa_floor,
            )
        if options.w_vis_mi > 0:
            self.vis_critic = build_critic(
                options.vis_critic or options.critic, dim, options.vis_kappa_init, options.vis_learn_kappa,
                options.critic_hidden, options.vis_kappa_floor,
            )
        self.last_terms = {}  # the weighted loss terms of the last training step (for their context gradients)

    def set_classnames(self, classnames):
        """Switch both views to another class set (the hand-crafted features of a set are computed once)."""
        self.prompt_learner.set_classnames(classnames)
        self.classnames = list(classnames)

    # ----- the two views -----
    def soft_features(self):
        return self.prompt_features()

    @property
    def uses_hand_crafted_view(self):
        options = self.options
        return self.text_critic is not None or options.infer_beta > 0 or options.w_align > 0 or options.w_consist > 0

    def hand_crafted_features(self):
        """``[C, D]`` for the current class set: computed on its first use, then taken from the cache."""
        features = self.cache.get(self.clip, self.text_encoder, self.classnames, self.templates)
        device = self.clip.token_embedding.weight.device
        return features if features.device == device else features.to(device)

    def class_weights(self):
        soft = self.soft_features()
        beta = self.options.infer_beta
        if beta == 0:
            return soft
        return F.normalize((1 - beta) * soft + beta * self.hand_crafted_features(), dim=-1)

    # ----- training -----
    def text_mi(self, soft):
        scores = self.text_critic(soft, self.hand_crafted_features())
        return mi_loss(scores, self.options.estimator)

    def visual_mi(self, images, image_features, labels, soft):
        """``(loss, bound, plan, mixed features)`` of the class-wise augmentation term."""
        options = self.options
        plan = plan_mix(labels, options.mix_mode, options.alpha)
        if options.mix_space == "pixel":
            mixed = self.encode_image(mix(images, plan), cacheable=False)  # a new image every step
        else:
            mixed = F.normalize(mix(image_features, plan), dim=-1)
        prototypes = mixed_prototypes(soft, labels, plan, options.mix_mode)
        scores = self.vis_critic(mixed, prototypes)
        same = same_virtual_class(labels, plan, options.mix_mode)
        loss, bound = mi_loss(scores, options.vis_estimator, same)
        return loss, bound, plan, mixed, same

    @staticmethod
    def alignment(soft, hand):
        """``mean_c (1 - cos(s_c, h_c))`` (both views are unit vectors)."""
        return (1 - (soft * hand).sum(dim=-1)).mean()

    def consistency(self, features, soft, hand):
        """``KL(p_h || p_s)`` averaged over the images: the soft view's class distribution of each image pulled
        towards the hand-crafted view's (frozen, so only the soft view moves)."""
        log_soft = F.log_softmax(self.logits(features, soft), dim=-1)
        log_hand = F.log_softmax(self.logits(features, hand), dim=-1)
        return F.kl_div(log_soft, log_hand, log_target=True, reduction="batchmean")

    def training_loss(self, images, labels):
        options = self.options
        image_features = self.encode_image(images)
        soft = self.soft_features()
        logits = self.logits(image_features, soft)
        loss_ce = F.cross_entropy(logits, labels)
        terms, extra = {"ce": loss_ce}, {}
        hand = self.hand_crafted_features() if self.uses_hand_crafted_view else None
        if self.text_critic is not None:
            loss_tmi, bound = self.text_mi(soft)
            terms["text_mi"] = options.w_text_mi * loss_tmi
            extra.update(loss_tmi=loss_tmi.detach(), mi_bound_text=bound,
                         kappa_text=self.text_critic.temperature().detach(),
                         kappa_text_at_floor=self.text_critic.temperature.at_floor())
            ceiling = mi_ceiling(options.estimator, len(soft))
            if ceiling is not None:  # the Donsker-Varadhan bound has none
                extra["mi_ceiling_text"] = ceiling
        mixed = None
        if self.vis_critic is not None:
            loss_vmi, bound, plan, mixed, same = self.visual_mi(images, image_features, labels, soft)
            terms["vis_mi"] = options.w_vis_mi * loss_vmi
            candidates = len(mixed) - same.float().sum(dim=1) + same.float().diagonal()
            extra.update(loss_vmi=loss_vmi.detach(), mi_bound_vis=bound,
                         kappa_vis=self.vis_critic.temperature().detach(),
                         kappa_vis_at_floor=self.vis_critic.temperature.at_floor(), mix_lambda=plan.lam.mean())
            ceiling = (candidates.log().mean().item() if options.vis_estimator == "infonce"
                       else mi_ceiling(options.vis_estimator, len(mixed)))
            if ceiling is not None:
                extra["mi_ceiling_vis"] = ceiling
        if options.w_align > 0:
            loss_align = self.alignment(soft, hand)
            terms["align"] = options.w_align * loss_align
            extra["loss_align"] = loss_align.detach()
        if options.w_consist > 0:
            loss_consist = self.consistency(image_features, soft, hand)
            if mixed is not None:
                loss_consist = loss_consist + self.consistency(mixed, soft, hand)
            terms["consist"] = options.w_consist * loss_consist
            extra["loss_consist"] = loss_consist.detach()
        if hand is not None:
            extra["cos_soft_hand"] = (soft * hand).sum(dim=-1).mean().detach()
        if extra:
            extra = {"loss_ce": loss_ce.detach(), **extra}
        self.last_terms = terms
        return sum(terms.values()), logits, extra

    def context_gradient_norms(self):
        """``{grad_ctx_<term>: norm}``: the norm of the gradient that each weighted term of the last training step
        sends to the context (one extra backward pass per term; the graph is kept for the optimiser's)."""
        ctx = self.prompt_learner.ctx
        norms = {}
        for name, term in self.last_terms.items():
            (grad,) = torch.autograd.grad(term, ctx, retain_graph=True, allow_unused=True)
            norms[f"grad_ctx_{name}"] = 0.0 if grad is None else grad.float().norm().item()
        return norms

    def class_specific_parameters(self):
        return ("prompt_learner.ctx",) if self.prompt_learner.csc else ()


def _dualmiprompt_config(protocol, dataset, shots):
    if protocol in ("xd", "dg"):  # cross-dataset and domain generalisation share one ImageNet-trained model
        return "vit_b16_c4_ep50_batch32_ctxv1_cross_datasets"
    return "vit_b16_c4_ep50_batch32_ctxv1" if dataset == "imagenet" else "vit_b16_c4_ep200_batch32_ctxv1"


def _dualmiprompt_benchmark(clip_model, classnames):
    from .templates import DEFAULT_TEMPLATE

    return DualMIPromptCLIP(clip_model, classnames, (DEFAULT_TEMPLATE,), DualMIOptions())


declare(name="DualMIPrompt", adapter="trainers.dualmiprompt", default_config=_dualmiprompt_config, order=90,
        benchmark_model=_dualmiprompt_benchmark)
