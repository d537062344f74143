"""CoOp's model: frozen CLIP whose class weights come from learnable context prompts (no Dassl needed)."""
import torch.nn.functional as F

from .encoders import PromptedCLIP
from .prompts import ContextPrompts


class CoOpCLIP(PromptedCLIP):
    """``logits = tau * norm(f(x)) @ norm(g([SOS] V [name_c] . [EOS]))^T`` with learnable context ``V``."""

    def __init__(self, clip_model, classnames, n_ctx=16, ctx_init="", csc=False, position="end"):
        super().__init__(clip_model)
        self.prompt_learner = ContextPrompts(clip_model, classnames, n_ctx, ctx_init, csc, position)

    def class_weights(self):
        learner = self.prompt_learner
        features = self.encode_prompts(learner(), learner.eot_index, learner)
        return F.normalize(features.float(), dim=-1)

    def class_specific_parameters(self):
        return ("prompt_learner.ctx",) if self.prompt_learner.csc else ()
