"""f(x) = x . theta, the linear regression of Figure 1 (left)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from symexp.components import Model
from symexp.schema import Positive


@dataclass
class LinearConfig(Model):
    name: Literal["linear"] = "linear"
    init_scale: Positive = 0.1  # std of each raw parameter at init
    reads = ("vector",)

    def build(self, data) -> nn.Module:
        return Linear(data.x.shape[1], self.init_scale)


class Linear(nn.Module):
    def __init__(self, dim: int, init_scale: float):
        super().__init__()
        self.init_scale = init_scale
        self.weight = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n, d] -> [n]
        return x @ self.weight

    # the effective weight is measured as a vector: sparsity metrics
    probes = {"weight": ("sparsity",)}
