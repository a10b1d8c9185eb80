"""Synthetic data with known answers: teacher-student linear regression (Figure 1, left)."""
from __future__ import annotations

import torch

from symexp.data import TensorData


def regression(cfg: dict, device: torch.device, dtype: torch.dtype) -> TensorData:
    """y = x . w* + noise, x ~ N(0, I_d); w* has `nonzero` N(0,1) coordinates (sparse) or all d (dense).

    Drawn in float64 on the CPU from `cfg["seed"]`, so every device and dtype sees the same numbers.
    """
    g = torch.Generator().manual_seed(cfg["seed"])
    n, d = cfg["n_train"], cfg["dim"]
    teacher = torch.randn(d, generator=g, dtype=torch.float64)
    if cfg["teacher"] == "sparse":
        mask = torch.zeros(d, dtype=torch.float64)
        mask[torch.randperm(d, generator=g)[: cfg["nonzero"]]] = 1.0
        teacher = teacher * mask
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ teacher + cfg["noise"] * torch.randn(n, generator=g, dtype=torch.float64)
    return TensorData(
        x=x.to(device, dtype), y=y.to(device, dtype), task="regression",
        extras={"teacher": teacher, "x64": x, "y64": y},
    )
