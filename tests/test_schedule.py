"""The warm-up + cosine learning-rate schedule, epoch by epoch, and its plain-data checkpoint state."""
import io
import math

import pytest
import torch

from trainers.schedule import WarmupScheduler


def lrs_per_epoch(scheduler, optimizer, epochs):
    """The LR used during each epoch when the schedule steps once at the end of every epoch (as Dassl does)."""
    seen = []
    for _ in range(epochs):
        seen.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    return seen


def make(base_lr=0.002, max_epoch=10, warmup=1, kind="constant"):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, float(max_epoch))
    return optimizer, WarmupScheduler(optimizer, cosine, warmup, kind, cons_lr=1e-5, min_lr=1e-6)


@pytest.mark.parametrize("warmup", [1, 3])
def test_constant_warmup_then_cosine(warmup):
    base, max_epoch = 0.002, 10
    optimizer, scheduler = make(base, max_epoch, warmup)
    expected = [1e-5 if e < warmup else 0.5 * base * (1 + math.cos(math.pi * (e - warmup) / max_epoch))
                for e in range(max_epoch)]
    assert lrs_per_epoch(scheduler, optimizer, max_epoch) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_linear_warmup_then_cosine():
    base, max_epoch, warmup = 0.01, 8, 3
    optimizer, scheduler = make(base, max_epoch, warmup, "linear")
    expected = [1e-6, base * 1 / 3, base * 2 / 3] + [
        0.5 * base * (1 + math.cos(math.pi * (e - warmup) / max_epoch)) for e in range(warmup, max_epoch)
    ]
    assert lrs_per_epoch(scheduler, optimizer, max_epoch) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_state_round_trips_through_weights_only_load():
    optimizer, scheduler = make(max_epoch=12, warmup=2)
    lrs_per_epoch(scheduler, optimizer, 5)
    buffer = io.BytesIO()
    torch.save({"scheduler": scheduler.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # refuses anything but plain data

    uninterrupted = lrs_per_epoch(scheduler, optimizer, 7)
    optimizer2, scheduler2 = make(max_epoch=12, warmup=2)
    optimizer2.load_state_dict(state["optimizer"])
    scheduler2.load_state_dict(state["scheduler"])
    assert lrs_per_epoch(scheduler2, optimizer2, 7) == pytest.approx(uninterrupted, rel=1e-12)


def test_unknown_warmup_type_is_refused():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, 5.0)
    with pytest.raises(ValueError, match="WARMUP_TYPE"):
        WarmupScheduler(optimizer, cosine, 1, "exponential")
