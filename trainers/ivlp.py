"""IVLP: independent deep prompts in CLIP's text and image encoders, the baseline of PromptSRC (ICCV 2023; model in
ivlp_model.py). The official code is muzairkhattak/PromptSRC, trainers/independentVL.py."""
from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode as CN

from .base import PromptTrainer
from .config import trainer_config
from .ivlp_model import IVLPCLIP


@trainer_config("IVLP")
def ivlp_config():
    # The keys of the official code (its train.py, cfg.TRAINER.IVLP), with the values of its one config and scripts
    # (vit_b16_c2_ep20_batch4_4+4ctx); its train.py's own defaults (2 + 2 tokens) are always overridden there.
    node = CN()
    node.N_CTX_VISION = 4  # prompt tokens per layer in the image encoder
    node.N_CTX_TEXT = 4  # prompt tokens per layer in the text encoder
    node.CTX_INIT = "a photo of a"  # its first N_CTX_TEXT tokens initialise the text context (when N_CTX_TEXT <= 4)
    node.PREC = "fp16"  # fp16, fp32, amp or bf16 (fp16 and amp run as fp32 on the CPU)
    node.PROMPT_DEPTH_VISION = 9  # image layers with prompts (0: none; 1: the input only)
    node.PROMPT_DEPTH_TEXT = 9  # text layers with prompts (1: the input context only)
    return node


def build_ivlp_kwargs(c):
    """The model's keyword arguments from a trainer node (IVLP's or PromptSRC's, which share these keys)."""
    return dict(n_ctx_text=c.N_CTX_TEXT, n_ctx_vision=c.N_CTX_VISION, ctx_init=c.CTX_INIT,
                depth_text=c.PROMPT_DEPTH_TEXT, depth_vision=c.PROMPT_DEPTH_VISION)


def describe(name, model):
    learner = model.prompt_learner
    print(f'{name}: text context "{learner.prompt_prefix}", {learner.n_ctx} text tokens per layer in '
          f"{model.depth_text} layers, {model.n_ctx_vision} image tokens per layer in {model.depth_vision} layers")


@TRAINER_REGISTRY.register()
class IVLP(PromptTrainer):
    CONFIG_KEY = "IVLP"

    def build_prompt_model(self, clip_model, classnames):
        model = IVLPCLIP(clip_model, classnames, **build_ivlp_kwargs(self.tcfg))
        describe("IVLP", model)
        return model
