"""CoOp: a learnable context shared by all classes (or one per class), the only trained parameters.

Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022. Defaults follow the official code.
"""
from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode as CN

from .base import PromptTrainer
from .config import trainer_config
from .coop_model import CoOpCLIP


@trainer_config("COOP")
def coop_config():
    node = CN()
    node.N_CTX = 16  # number of context tokens (ignored when CTX_INIT gives the words)
    node.CSC = False  # class-specific context
    node.CTX_INIT = ""  # words whose embeddings initialise the context, e.g. "a photo of a"
    node.PREC = "fp16"  # fp16, fp32, amp or bf16 (fp16 and amp run as fp32 on the CPU)
    node.CLASS_TOKEN_POSITION = "end"  # end, middle or front
    return node


@TRAINER_REGISTRY.register()
class CoOp(PromptTrainer):
    CONFIG_KEY = "COOP"

    def build_prompt_model(self, clip_model, classnames):
        c = self.tcfg
        model = CoOpCLIP(clip_model, classnames, c.N_CTX, c.CTX_INIT, c.CSC, c.CLASS_TOKEN_POSITION)
        print(f'Initial context: "{model.prompt_learner.prompt_prefix}" ({model.prompt_learner.n_ctx} tokens)')
        return model
