"""MaPLe: coupled deep prompts in CLIP's text and image encoders (model in maple_model.py)."""
from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode as CN

from .base import PromptTrainer
from .config import trainer_config
from .maple_model import MaPLeCLIP


@trainer_config("MAPLE")
def maple_config():
    # Defaults of the official code (muzairkhattak/multimodal-prompt-learning, train.py).
    node = CN()
    node.N_CTX = 2  # prompt tokens per layer, in both encoders
    node.CTX_INIT = "a photo of a"  # the first N_CTX tokens initialise the text context (when N_CTX <= 4)
    node.PREC = "fp16"  # fp16, fp32, amp or bf16 (fp16 and amp run as fp32 on the CPU)
    node.PROMPT_DEPTH = 9  # layers that get prompts (1: the input layer only)
    return node


@TRAINER_REGISTRY.register()
class MaPLe(PromptTrainer):
    CONFIG_KEY = "MAPLE"

    def build_prompt_model(self, clip_model, classnames):
        c = self.tcfg
        model = MaPLeCLIP(clip_model, classnames, c.N_CTX, c.CTX_INIT, c.PROMPT_DEPTH)
        learner = model.prompt_learner
        print(f'MaPLe: prompt text "{learner.prompt_prefix}", {learner.n_ctx} learned tokens per layer, '
              f"prompt depth {model.prompt_depth}")
        return model
