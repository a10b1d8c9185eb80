"""A fully connected ReLU/tanh network: input -> hidden widths -> classes (mlp, on images) or one
regression output (ffnn, on vectors).

Permutation symmetry: hidden unit i of layer l is v_i = [incoming row W_l[i], bias b_l[i], outgoing
column W_{l+1}[:, i]]; swapping two units leaves the function unchanged, and the symmetric solution
v_i = v_j is a homogeneous ensemble (paper.md 3). Each hidden layer is probed as such unit vectors.

With a regression task the head is one linear output, returned as [N] (ffnn: the 20-5-1 learner of
slowly-changing regression). `init: kaiming` is the loss-of-plasticity repo's
(`lop/nets/ffnn.py`): Kaiming-uniform hidden weights for the activation, Kaiming-uniform "linear"
output weights, every bias 0; `init: torch` is nn.Linear's default. `loss: mse` trains a classifier on the
squared distance of its logits to the one-hot target instead of cross-entropy (symexp.ensemble.task_loss).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from symexp.components import Model
from symexp.metrics import unit_vectors
from symexp.schema import Count

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}


@dataclass
class MLPConfig(Model):
    name: Literal["mlp"] = "mlp"
    widths: list[Count] = field(default_factory=lambda: [128, 128])  # hidden layer widths
    activation: Literal["relu", "tanh"] = "relu"
    init: Literal["torch", "kaiming"] = "torch"  # nn.Linear's default | LoP's (Kaiming-uniform, biases 0)
    count_zeros: bool = False  # count hidden units exactly 0 on each training example (LoP's per-example measure)
    loss: Literal["cross_entropy", "mse"] = "cross_entropy"  # classification: CE | |logits - one-hot|^2
    reads = ("images",)

    def build(self, data) -> nn.Module:
        scalar = data.task == "regression"
        n_out = 1 if scalar else len(data.classes)
        return MLP(data.x[0].numel(), self.widths, n_out, self.activation, init=self.init, scalar_output=scalar,
                   count_zeros=self.count_zeros, classification_loss=self.loss)


@dataclass
class FFNNConfig(MLPConfig):
    """The same network on vector inputs, LoP's FFNN (`lop/nets/ffnn.py`): one output for regression."""

    name: Literal["ffnn"] = "ffnn"
    widths: list[Count] = field(default_factory=lambda: [5])
    init: Literal["torch", "kaiming"] = "kaiming"
    reads = ("vector",)


class MLP(nn.Module):
    def __init__(self, in_features: int, widths: list[int], n_out: int, activation: str,
                 init: str = "torch", scalar_output: bool = False, count_zeros: bool = False,
                 classification_loss: str = "cross_entropy"):
        super().__init__()
        self.act, self.activation, self.init, self.scalar_output = ACTIVATIONS[activation], activation, init, scalar_output
        self.classification_loss = classification_loss  # read by symexp.ensemble.task_loss
        dims = [in_features, *widths, n_out]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.probes = {f"hidden{i + 1}": ("units",) for i in range(len(widths))}
        if count_zeros:  # [sum over training examples of the fraction of units at 0, examples]: see zero_counts
            for name in self.probes:
                self.register_buffer(f"zeros_{name}", torch.zeros(2))
        if init != "torch":
            self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()
        if self.init == "kaiming":  # after every nn.Linear's own draws, in FFNN's order
            for i, layer in enumerate(self.layers):
                last = i == len(self.layers) - 1
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="linear" if last else self.activation)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, features: bool = False, hidden: bool = False):
        """Outputs ([N, n_out] logits, or [N] with scalar_output); with features=True also the last hidden
        layer's activations; with hidden=True every hidden layer's activations (a list) instead."""
        h, acts = x.flatten(1), []
        for name, layer in zip(self.probes, self.layers[:-1]):
            h = self.act(layer(h))
            acts.append(h)
            counter = getattr(self, f"zeros_{name}", None)
            if counter is not None and self.training:  # the train step's own forward: no extra pass
                zero = (h.detach() == 0).to(counter.dtype).mean(-1)  # [N]: fraction of units at 0, per example
                counter.add_(torch.stack([zero.sum(), torch.ones_like(zero).sum()]))
        out = self.layers[-1](h)
        out = out[:, 0] if self.scalar_output else out
        if hidden:
            return out, acts
        return (out, h) if features else out

    def classifier(self, theta: dict[str, torch.Tensor]) -> torch.Tensor:
        """The last layer's weight [..., n_out, last width] (NC3 reads it against the class means)."""
        return theta[f"layers.{len(self.layers) - 1}.weight"]

    def probe_views(self, theta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: unit_vectors(theta[f"layers.{i}.weight"], theta[f"layers.{i + 1}.weight"],
                                   theta[f"layers.{i}.bias"])
                for i, name in enumerate(self.probes)}
