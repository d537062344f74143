"""Gaussian prompt aggregation: the weights against their formula, and the running average against a direct sum."""
import io
import math

import pytest
import torch

from trainers.aggregation import ParameterAverage, gpa_weights


def test_weights_follow_the_gaussian_and_sum_to_one():
    weights = gpa_weights(20, 15.0, 1.0)
    raw = [math.exp(-(e - 15) ** 2 / 2) for e in range(1, 21)]
    assert weights == pytest.approx([r / sum(raw) for r in raw])
    assert sum(weights) == pytest.approx(1.0)
    assert max(range(20), key=weights.__getitem__) == 14  # epoch 15
    for mean, std in ((50.0, 10.0), (1.0, 0.3), (7.5, 2.0)):
        assert sum(gpa_weights(50, mean, std)) == pytest.approx(1.0)


def test_a_vanishing_spread_gives_the_last_epoch():
    assert gpa_weights(10, 10.0, 0.0) == [0.0] * 9 + [1.0]
    assert gpa_weights(10, 10.0, 1e-3) == pytest.approx([0.0] * 9 + [1.0])
    assert gpa_weights(4, 2.5, 0.0) == [0.0, 0.0, 1.0, 0.0]  # a tie goes to the later epoch
    contexts = [torch.randn(4, 8, generator=torch.Generator().manual_seed(e)) for e in range(10)]
    average = ParameterAverage(gpa_weights(10, 10.0, 0.0))
    for epoch, ctx in enumerate(contexts, 1):
        average.add(epoch, {"ctx": ctx})
    assert torch.equal(average.average()["ctx"].float(), contexts[-1])
    with pytest.raises(ValueError):
        gpa_weights(10, 5.0, -1.0)


def test_running_average_equals_the_weighted_sum_and_survives_a_restart():
    weights = gpa_weights(6, 4.0, 1.5)
    contexts = [torch.randn(3, 5, generator=torch.Generator().manual_seed(e)) for e in range(6)]
    expected = sum(w * c.double() for w, c in zip(weights, contexts))
    first = ParameterAverage(weights)
    for epoch in (1, 2, 3):
        first.add(epoch, {"ctx": contexts[epoch - 1]})
    saved = io.BytesIO()  # through a checkpoint, as a resumed run reads it
    torch.save(first.state(), saved)
    saved.seek(0)
    resumed = ParameterAverage(weights)
    resumed.load(torch.load(saved, weights_only=True))
    for epoch in (4, 5, 6):
        resumed.add(epoch, {"ctx": contexts[epoch - 1]})
    assert torch.allclose(resumed.average()["ctx"], expected, atol=1e-12)
    with pytest.raises(RuntimeError, match="expected epoch 7"):
        resumed.add(8, {"ctx": contexts[0]})
    with pytest.raises(ValueError, match="other weights"):  # other GPA_MEAN: its sum cannot be continued
        ParameterAverage(gpa_weights(6, 5.0, 1.5)).load(first.state())
