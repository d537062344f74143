"""CoCoOp: CoOp's context plus an image-conditioned bias from a small meta-network (model in cocoop_model.py)."""
from dassl.engine import TRAINER_REGISTRY
from yacs.config import CfgNode as CN

from .base import PromptTrainer
from .cocoop_model import DEFAULT_SEQUENCE_BUDGET, CoCoOpCLIP
from .config import trainer_config


@trainer_config("COCOOP")
def cocoop_config():
    # Defaults of the official code (KaiyangZhou/CoOp, train.py); the configs set N_CTX 4 and CTX_INIT.
    node = CN()
    node.N_CTX = 16  # number of context tokens (ignored when CTX_INIT gives the words)
    node.CTX_INIT = ""  # words whose embeddings initialise the context, e.g. "a photo of a"
    node.PREC = "fp16"  # fp16, fp32, amp or bf16 (fp16 and amp run as fp32 on the CPU)
    # At most this many prompt sequences (images x classes) per text-encoder call; the images of a batch are
    # taken in chunks of max(1, SEQUENCE_BUDGET // classes). Only memory depends on it, not the results.
    node.SEQUENCE_BUDGET = DEFAULT_SEQUENCE_BUDGET
    return node


@TRAINER_REGISTRY.register()
class CoCoOp(PromptTrainer):
    CONFIG_KEY = "COCOOP"

    def build_prompt_model(self, clip_model, classnames):
        c = self.tcfg
        model = CoCoOpCLIP(clip_model, classnames, c.N_CTX, c.CTX_INIT, c.SEQUENCE_BUDGET)
        print(f'Initial context: "{model.prompt_learner.prompt_prefix}" ({model.prompt_learner.n_ctx} tokens)')
        return model
