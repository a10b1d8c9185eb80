"""A fully connected ReLU/tanh network on flattened images: input -> hidden widths -> classes.

Permutation symmetry: hidden unit i of layer l is v_i = [incoming row W_l[i], bias b_l[i], outgoing
column W_{l+1}[:, i]]; swapping two units leaves the function unchanged, and the symmetric solution
v_i = v_j is a homogeneous ensemble (paper.md 3). Each hidden layer is probed as such unit vectors.
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
    reads = ("images",)

    def build(self, data) -> nn.Module:
        return MLP(data.x[0].numel(), self.widths, len(data.classes), self.activation)


class MLP(nn.Module):
    def __init__(self, in_features: int, widths: list[int], n_classes: int, activation: str):
        super().__init__()
        self.act = ACTIVATIONS[activation]
        dims = [in_features, *widths, n_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.probes = {f"hidden{i + 1}": ("units",) for i in range(len(widths))}

    def reset_parameters(self) -> None:
        for layer in self.layers:
            layer.reset_parameters()

    def forward(self, x: torch.Tensor, features: bool = False):
        """Logits [N, classes]; with features=True also the last hidden layer's activations."""
        h = x.flatten(1)
        for layer in self.layers[:-1]:
            h = self.act(layer(h))
        logits = self.layers[-1](h)
        return (logits, h) if features else logits

    def probe_views(self, theta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {name: unit_vectors(theta[f"layers.{i}.weight"], theta[f"layers.{i + 1}.weight"],
                                   theta[f"layers.{i}.bias"])
                for i, name in enumerate(self.probes)}
