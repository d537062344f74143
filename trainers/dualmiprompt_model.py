"""DualMIPrompt's model: soft and hand-crafted text views tied by mutual information (no Dassl needed).

- Soft view: ``s_c = norm(g([SOS] V [name_c] . [EOS]))`` with learnable context ``V`` (CoOp's prompts). It is the
  only view that classifies during training: ``L_ce = CE(tau x S^T, y)``.
- Hand-crafted view: ``h_c = norm(mean_k norm(g(template_k(name_c))))``, frozen, computed once per class set.
- Dual-view MI: ``L_tmi``, an MI estimator over ``M[c, k] = T(s_c, h_k)`` (the other classes are the negatives).
- Class-wise visual augmentation: mixed image features ``x~`` tied to mixed soft prototypes ``p~`` by ``L_vmi``, an
  MI estimator with its own critic.
- ``L = L_ce + W_TEXT_MI L_tmi + W_VIS_MI L_vmi``; inference uses ``w_c = norm((1 - beta) s_c + beta h_c)``.
A weight at 0 removes its term and its critic, so ``W_TEXT_MI = W_VIS_MI = 0`` is CoOp with the same context.
"""
from dataclasses import dataclass, fields

import torch.nn.functional as F

from .encoders import PromptedCLIP, TemplateFeatureCache
from .mutual_info import (
    CRITICS,
    ESTIMATORS,
    MIX_MODES,
    MIX_SPACES,
    build_critic,
    check_choice,
    mi_loss,
    mix,
    mixed_prototypes,
    plan_mix,
    same_virtual_class,
)
from .prompts import POSITIONS, ContextPrompts

TEMPLATE_KINDS = ("dataset", "ensemble")


@dataclass
class DualMIOptions:
    """Every option of the method; the config node ``TRAINER.DUALMIPROMPT`` holds the same keys in upper case,
    with these defaults (see notes/README_dualmiprompt.md for the reasoning behind each)."""

    n_ctx: int = 4  # context tokens (ignored when CTX_INIT gives the words)
    ctx_init: str = "a photo of a"  # words whose embeddings initialise the context ("" = random N(0, 0.02))
    csc: bool = False  # class-specific context (cannot transfer to new classes)
    class_token_position: str = "end"  # end, middle or front
    templates: str = "dataset"  # hand-crafted view: "dataset" (its own template) or "ensemble" (CLIP's 7 + it)
    w_text_mi: float = 1.0  # weight of the dual-view (soft / hand-crafted) MI loss; 0 switches it off
    w_vis_mi: float = 0.5  # weight of the class-wise visual augmentation MI loss; 0 switches it off
    estimator: str = "infonce"  # estimator of the dual-view MI: infonce, jsd or dv
    critic: str = "cosine"  # critic of both MI terms (each term has its own instance): cosine, bilinear or mlp
    vis_estimator: str = "infonce"  # estimator of the visual MI term
    vis_critic: str = ""  # critic of the visual MI term; "" = the same kind as CRITIC
    kappa_init: float = 0.07  # initial temperature of the dual-view critic
    vis_kappa_init: float = 0.01  # initial temperature of the visual critic (CLIP's own: 1 / logit scale 100)
    learn_kappa: bool = True  # learn both temperatures (False: fixed at their initial values)
    critic_hidden: int = 128  # hidden units of each projection head of the mlp critic
    mix_mode: str = "inter"  # partner of each image: "inter" (another class) or "intra" (the same class)
    mix_space: str = "feature"  # mix normalised image features ("feature") or images before the encoder ("pixel")
    alpha: float = 1.0  # lambda ~ Beta(alpha, alpha); 1.0 is uniform on [0, 1]
    infer_beta: float = 0.0  # inference weights norm((1 - beta) s + beta h); 0 = soft view only

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
        for name in ("w_text_mi", "w_vis_mi"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name.upper()} must be >= 0 (0 switches the term off); got {getattr(self, name)}")
        for name in ("kappa_init", "vis_kappa_init", "alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name.upper()} must be positive; got {getattr(self, name)}")
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
                options.critic, dim, options.kappa_init, options.learn_kappa, options.critic_hidden
            )
        if options.w_vis_mi > 0:
            self.vis_critic = build_critic(
                options.vis_critic or options.critic, dim, options.vis_kappa_init, options.learn_kappa,
                options.critic_hidden,
            )

    def set_classnames(self, classnames):
        """Switch both views to another class set (the hand-crafted features of a set are computed once)."""
        self.prompt_learner.set_classnames(classnames)
        self.classnames = list(classnames)

    # ----- the two views -----
    def soft_features(self):
        learner = self.prompt_learner
        features = self.encode_prompts(learner(), learner.eot_index, learner)
        return F.normalize(features.float(), dim=-1)

    @property
    def uses_hand_crafted_view(self):
        return self.text_critic is not None or self.options.infer_beta > 0

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
        options = self.options
        plan = plan_mix(labels, options.mix_mode, options.alpha)
        if options.mix_space == "pixel":
            mixed = self.encode_image(mix(images, plan))
        else:
            mixed = F.normalize(mix(image_features, plan), dim=-1)
        prototypes = mixed_prototypes(soft, labels, plan, options.mix_mode)
        scores = self.vis_critic(mixed, prototypes)
        loss, bound = mi_loss(scores, options.vis_estimator, same_virtual_class(labels, plan, options.mix_mode))
        return loss, bound, plan

    def training_loss(self, images, labels):
        options = self.options
        image_features = self.encode_image(images)
        soft = self.soft_features()
        logits = self.logits(image_features, soft)
        loss_ce = F.cross_entropy(logits, labels)
        loss, extra = loss_ce, {}
        if self.text_critic is not None:
            loss_tmi, bound = self.text_mi(soft)
            loss = loss + options.w_text_mi * loss_tmi
            extra.update(loss_tmi=loss_tmi.detach(), mi_bound_text=bound,
                         kappa_text=self.text_critic.temperature().detach())
        if self.vis_critic is not None:
            loss_vmi, bound, plan = self.visual_mi(images, image_features, labels, soft)
            loss = loss + options.w_vis_mi * loss_vmi
            extra.update(loss_vmi=loss_vmi.detach(), mi_bound_vis=bound,
                         kappa_vis=self.vis_critic.temperature().detach(), mix_lambda=plan.lam.mean())
        if extra:
            extra = {"loss_ce": loss_ce.detach(), **extra}
        return loss, logits, extra

    def class_specific_parameters(self):
        return ("prompt_learner.ctx",) if self.prompt_learner.csc else ()
