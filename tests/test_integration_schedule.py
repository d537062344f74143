"""Our schedule gives, epoch by epoch, the learning rates of Dassl's own schedulers for the same config.

Stock Dassl's warm-up schedulers cannot be built on current torch (they pass ``verbose`` to
``LRScheduler.__init__``); to obtain its reference values this test lets that argument through for the
duration of the test only, without touching Dassl's files.
"""
import inspect

import pytest
import torch
import torch.optim.lr_scheduler as torch_schedulers

pytestmark = pytest.mark.integration

CASES = [
    dict(LR_SCHEDULER="cosine", MAX_EPOCH=10, WARMUP_EPOCH=1, WARMUP_TYPE="constant", WARMUP_RECOUNT=True),
    dict(LR_SCHEDULER="cosine", MAX_EPOCH=10, WARMUP_EPOCH=2, WARMUP_TYPE="linear", WARMUP_RECOUNT=True),
    dict(LR_SCHEDULER="cosine", MAX_EPOCH=10, WARMUP_EPOCH=2, WARMUP_TYPE="constant", WARMUP_RECOUNT=False),
    dict(LR_SCHEDULER="single_step", STEPSIZE=(3,), MAX_EPOCH=9, WARMUP_EPOCH=1, WARMUP_TYPE="constant",
         WARMUP_RECOUNT=True),
    dict(LR_SCHEDULER="multi_step", STEPSIZE=(2, 5), MAX_EPOCH=8, WARMUP_EPOCH=2, WARMUP_TYPE="linear",
         WARMUP_RECOUNT=False),
    dict(LR_SCHEDULER="cosine", MAX_EPOCH=6, WARMUP_EPOCH=-1),
]


def per_epoch(scheduler, optimizer, epochs):
    seen = []
    for _ in range(epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    return seen


@pytest.fixture
def dassl_with_verbose_shim(monkeypatch):
    original = torch_schedulers.LRScheduler.__init__
    if "verbose" not in inspect.signature(original).parameters:
        def accept_verbose(self, optimizer, last_epoch=-1, verbose=False):
            original(self, optimizer, last_epoch)
        monkeypatch.setattr(torch_schedulers.LRScheduler, "__init__", accept_verbose)
    from dassl.optim import build_lr_scheduler
    return build_lr_scheduler


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_same_learning_rates_as_dassl(case, dassl_with_verbose_shim):
    from trainers.config import get_cfg_default
    from trainers.schedule import build_lr_schedule

    cfg = get_cfg_default()
    cfg.OPTIM.NAME, cfg.OPTIM.LR = "sgd", 0.002
    for key, value in case.items():
        cfg.OPTIM[key] = value
    cfg.freeze()

    def run(builder):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.OPTIM.LR)
        return per_epoch(builder(optimizer, cfg.OPTIM), optimizer, cfg.OPTIM.MAX_EPOCH)

    ours = run(build_lr_schedule)
    reference = run(dassl_with_verbose_shim)
    assert ours == pytest.approx(reference, rel=1e-12, abs=1e-15)
