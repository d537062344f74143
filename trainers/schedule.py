"""Dassl's warm-up learning-rate schedule, rebuilt so it runs on current torch and checkpoints as plain data.

Stock Dassl 0.6.3 passes ``verbose`` to ``LRScheduler.__init__`` (removed in torch 2.7) and pickles its successor
scheduler object into checkpoints (refused by ``torch.load(weights_only=True)``). This class keeps Dassl's
epoch-by-epoch rule: during the first ``warmup_epoch`` epochs the LR is constant (``cons_lr``) or linear
(``min_lr`` at epoch 0, then ``base_lr * epoch / warmup_epoch``); after that the successor scheduler runs.
"""
from torch.optim.lr_scheduler import LRScheduler


class WarmupScheduler(LRScheduler):
    def __init__(self, optimizer, successor, warmup_epoch, warmup_type="constant", cons_lr=1e-5, min_lr=1e-5):
        if warmup_type not in ("constant", "linear"):
            raise ValueError(f"OPTIM.WARMUP_TYPE must be 'constant' or 'linear'; got {warmup_type!r}")
        self.successor = successor
        self.warmup_epoch = warmup_epoch
        self.warmup_type = warmup_type
        self.cons_lr = cons_lr
        self.min_lr = min_lr
        super().__init__(optimizer)

    def get_lr(self):
        if self.last_epoch >= self.warmup_epoch:
            return self.successor.get_last_lr()
        if self.warmup_type == "constant":
            return [self.cons_lr for _ in self.base_lrs]
        if self.last_epoch == 0:
            return [self.min_lr for _ in self.base_lrs]
        return [lr * self.last_epoch / self.warmup_epoch for lr in self.base_lrs]

    def step(self, epoch=None):
        if self.last_epoch >= self.warmup_epoch:
            self.successor.step()
            self._last_lr = self.successor.get_last_lr()
        else:
            super().step()

    def state_dict(self):
        state = {key: value for key, value in self.__dict__.items() if key not in ("optimizer", "successor")}
        state["successor"] = self.successor.state_dict()
        return state

    def load_state_dict(self, state_dict):
        state = dict(state_dict)
        self.successor.load_state_dict(state.pop("successor"))
        self.__dict__.update(state)


def build_lr_schedule(optimizer, optim_cfg):
    """Dassl's schedule for ``optim_cfg`` (the ``OPTIM`` config node): its own successor scheduler behind our
    warm-up wrapper."""
    from dassl.optim import build_lr_scheduler

    successor_cfg = optim_cfg.clone()
    successor_cfg.defrost()
    successor_cfg.WARMUP_EPOCH = 0
    successor = build_lr_scheduler(optimizer, successor_cfg)
    warmup = optim_cfg.WARMUP_EPOCH
    if warmup <= 0:
        return successor
    if not optim_cfg.WARMUP_RECOUNT:
        successor.last_epoch = warmup
    return WarmupScheduler(
        optimizer, successor, warmup, optim_cfg.WARMUP_TYPE, optim_cfg.WARMUP_CONS_LR, optim_cfg.WARMUP_MIN_LR
    )
