"""Gaussian prompt aggregation (GPA, PromptSRC, ICCV 2023): the learned parameters used for inference are a
Gaussian-weighted average of their values at the end of each epoch, ``sum_e w_e theta_e`` with
``w_e proportional to exp(-(e - mean)^2 / (2 std^2))`` over epochs ``e = 1..E`` (pure torch, no Dassl)."""
import math

import torch


def gpa_weights(max_epoch, mean, std):
    """``[w_1, ..., w_E]``, summing to 1. ``std`` 0 puts all the weight on the epoch nearest ``mean`` (the later
    one on a tie), so a vanishing spread around the last epoch gives the last epoch's parameters."""
    if max_epoch < 1:
        raise ValueError(f"GPA needs at least one epoch; got {max_epoch}")
    if not (math.isfinite(mean) and math.isfinite(std)) or std < 0:
        raise ValueError(f"GPA_MEAN must be finite and GPA_STD finite and >= 0; got {mean}, {std}")
    epochs = torch.arange(1, max_epoch + 1, dtype=torch.float64)
    if std == 0:
        distance = (epochs - mean).abs()
        nearest = int(torch.nonzero(distance == distance.min()).max())
        weights = torch.zeros(max_epoch, dtype=torch.float64)
        weights[nearest] = 1.0
        return weights.tolist()
    return torch.softmax(-(epochs - mean) ** 2 / (2 * std ** 2), dim=0).tolist()


class ParameterAverage:
    """The running ``sum_e w_e theta_e`` of named tensors; its state is plain tensors (checkpoints reload it)."""

    def __init__(self, weights):
        self.weights = list(weights)
        self.total = {}
        self.epochs = 0

    def add(self, epoch, named):
        """Fold in the parameters at the end of ``epoch`` (1-based; each epoch once, in order)."""
        if epoch != self.epochs + 1:
            raise RuntimeError(f"GPA expected epoch {self.epochs + 1}, got {epoch}")
        weight = self.weights[epoch - 1]
        for name, value in named.items():
            value = value.detach().to("cpu", torch.float64)  # on the CPU, where a resumed run's state is loaded
            self.total[name] = self.total.get(name, torch.zeros_like(value)) + weight * value
        self.epochs = epoch

    def average(self):
        return {name: value.clone() for name, value in self.total.items()}

    def state(self):
        return {"epochs": self.epochs, "weights": torch.tensor(self.weights, dtype=torch.float64),
                "total": {name: value.clone() for name, value in self.total.items()}}

    def load(self, state):
        """Continue from ``state``; refused (ValueError) when it was made with other weights (other GPA_MEAN,
        GPA_STD or number of epochs), whose sum cannot be continued with these."""
        saved = state["weights"].tolist()
        if len(saved) != len(self.weights) or any(abs(a - b) > 1e-12 for a, b in zip(saved, self.weights)):
            raise ValueError("the checkpoint's GPA average was made with other weights (GPA_MEAN, GPA_STD or "
                             "OPTIM.MAX_EPOCH differ)")
        self.epochs = int(state["epochs"])
        self.total = {name: value.to(torch.float64) for name, value in state["total"].items()}
