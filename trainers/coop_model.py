"""CoOp's model: frozen CLIP whose class weights come from learnable context prompts (no Dassl needed)."""

from .encoders import PromptedCLIP
from .prompts import ContextPrompts
from .registry import declare


class CoOpCLIP(PromptedCLIP):
    """``logits = tau * norm(f(x)) @ norm(g([SOS] V [name_c] . [EOS]))^T`` with learnable context ``V``."""

    def __init__(self, clip_model, classnames, n_ctx=16, ctx_init="", csc=False, position="end"):
        super().__init__(clip_model)
        self.prompt_learner = ContextPrompts(clip_model, classnames, n_ctx, ctx_init, csc, position)
        self.classnames = list(classnames)

    def set_classnames(self, classnames):
        """Build the prompts of another class set with the same context."""
        self.prompt_learner.set_classnames(classnames)
        self.classnames = list(classnames)

    def class_weights(self):
        return self.prompt_features()

    def class_specific_parameters(self):
        return ("prompt_learner.ctx",) if self.prompt_learner.csc else ()


def _coop_config(protocol, dataset, shots):
    if protocol == "fewshot":
        # CoOp's few-shot schedule (KaiyangZhou/CoOp, COOP.md): 50 epochs for 1 shot and for ImageNet, 100 for 2
        # and 4 shots, 200 for 8 and 16; 16 random context tokens.
        if dataset == "imagenet" or shots <= 1:
            return "vit_b16_ep50"
        return "vit_b16_ep100" if shots <= 4 else "vit_b16"
    return "vit_b16_ep50_ctxv1" if dataset == "imagenet" else "vit_b16_ctxv1"


def _coop_benchmark(clip_model, classnames):
    return CoOpCLIP(clip_model, classnames, n_ctx=4, ctx_init="a photo of a")


declare(name="CoOp", adapter="trainers.coop", default_config=_coop_config, order=20, benchmark_model=_coop_benchmark)
