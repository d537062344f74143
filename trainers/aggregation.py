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


class GaussianPromptAggregation:
    """GPA over named parameters: ``end_epoch(e)`` folds in their values at the end of epoch ``e`` (1-based) with
    weight ``w_e`` (``aggregation.gpa_weights``: the normal density at each epoch, normalised to sum 1, as the official
    ``get_gauss`` + normalisation); at the last epoch it writes ``sum_e w_e theta_e`` into the parameters. Its state
    (the running sum) is plain tensors, for checkpoints."""

    def __init__(self, parameters, max_epoch, mean, std):
        self.parameters = dict(parameters)
        self.max_epoch = int(max_epoch)
        self.weights = gpa_weights(self.max_epoch, float(mean), float(std))
        self.average = ParameterAverage(self.weights)

    def end_epoch(self, epoch):
        """Fold in the parameters at the end of ``epoch``; True when it was the last one and they were replaced."""
        self.average.add(epoch, self.parameters)
        if epoch < self.max_epoch:
            return False
        averaged = self.average.average()
        with torch.no_grad():
            for name, param in self.parameters.items():
                param.copy_(averaged[name].to(param.dtype))
        return True

    def state(self):
        return self.average.state()

    def load(self, state):
        """Continue from ``state`` (ValueError when it was made with other weights or for other parameters)."""
        if int(state["epochs"]) > 0 and set(state["total"]) != set(self.parameters):
            raise ValueError(f"the checkpoint's GPA average holds {', '.join(sorted(state['total']))}, not the "
                             f"learned parameters {', '.join(sorted(self.parameters))}")
        self.average.load(state)


class AggregationCheckpoints:
    """The checkpoint half of GPA for a trainer (before ``PromptTrainer`` in its bases): a trainer that sets
    ``self.gpa`` (a ``GaussianPromptAggregation``) in ``before_train`` saves its running sum with each checkpoint and
    restores it on resume, so that a resumed run averages the same epochs as one never stopped."""

    gpa = None

    def extra_checkpoint_state(self):
        return {"gpa": self.gpa.state()} if self.gpa is not None else {}

    def load_extra_checkpoint_state(self, checkpoint, source):
        from .checkpoints import CheckpointError

        if self.gpa is None:
            return
        if "gpa" not in checkpoint:
            raise CheckpointError(f"{source} was written without GPA, so the average of the epochs before it is "
                                  "unknown: resume with the same options, or train in a fresh output folder.")
        try:
            self.gpa.load(checkpoint["gpa"])
        except ValueError as err:
            raise CheckpointError(f"{source}: {err}; resume with the same options, or train in a fresh output "
                                  "folder.") from None
