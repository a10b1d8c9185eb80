"""f(x) = W x, W in R^{out x in}: the linear map of Figure 1 (middle), factorised by symmetry=rotation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from symexp.components import Model
from symexp.schema import Positive


@dataclass
class MatrixConfig(Model):
    name: Literal["matrix"] = "matrix"
    init_scale: Positive = 0.1  # std of each entry of the effective W at init
    reads = ("matrix",)
    matrix_only = True

    def build(self, data) -> nn.Module:
        return Matrix(data.x.shape[1], data.y.shape[1], self.init_scale)


class Matrix(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, init_scale: float):
        super().__init__()
        self.init_scale = init_scale
        self.weight = nn.Parameter(torch.empty(dim_out, dim_in))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.init_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n, in] -> [n, out]
        return x @ self.weight.T

    # the effective weight is measured as a matrix: rank metrics and its full spectrum
    probes = {"weight": ("rank", "spectrum")}
