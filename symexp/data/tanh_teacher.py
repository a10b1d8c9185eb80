"""A tanh teacher, y = sum_j a_j tanh(b_j . x) + noise, x ~ N(0, I_d): the data of rows T1-T3.

The dead-network threshold of a tanh student is gamma* = |E[x y]| (paper.md 2.3): at the origin every
unit's symmetry-breaking Hessian block is [[0, -2 E[x y]^T], [-2 E[x y], 0]]. With `xy_norm` set, y
is rescaled so that the sample's |E[x y]| equals it exactly: a sweep can then name gamma / gamma*
directly (T2), and the SGD-noise experiment (T3) fixes its signal size while `noise` sets how noisy
each sample's curvature -2 x y is.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, Optional

import torch

from symexp.components import DataSet
from symexp.data import TensorData, Truth
from symexp.schema import Count, NonNeg, Positive


@dataclass
class TanhTeacher(DataSet):
    name: Literal["tanh_teacher"] = "tanh_teacher"
    n_train: Count = 512  # samples
    dim: Count = 5  # input dimension d
    width: Count = 2  # teacher hidden units: y = sum_j a_j tanh(b_j . x) + noise
    noise: NonNeg = 0.1  # std of the fixed label noise (before the xy_norm rescaling)
    xy_norm: Optional[Positive] = None  # rescale y so |E[x y]| = this = gamma* of the dead net; null = as drawn
    seed: int = 0  # data seed, shared by all members
    kind = "vector"

    def build(self, device: torch.device, dtype: torch.dtype) -> TensorData:
        return tanh_teacher(asdict(self), device, dtype)


def tanh_teacher(cfg: dict, device: torch.device, dtype: torch.dtype) -> TensorData:
    """Drawn in float64 on the CPU from `cfg["seed"]`, so every device and dtype sees the same numbers."""
    g = torch.Generator().manual_seed(cfg["seed"])
    n, d, k = cfg["n_train"], cfg["dim"], cfg["width"]
    b = torch.randn(k, d, generator=g, dtype=torch.float64)
    a = torch.randn(k, generator=g, dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.tanh(x @ b.T) @ a + cfg["noise"] * torch.randn(n, generator=g, dtype=torch.float64)
    if cfg["xy_norm"] is not None:
        y = y * cfg["xy_norm"] / torch.linalg.vector_norm(x.T @ y / n)
    return TensorData(
        x=x.to(device, dtype), y=y.to(device, dtype), task="regression",
        truth=Truth(x64=x, y64=y, gamma_star=float(torch.linalg.vector_norm(x.T @ y / n))),
    )
