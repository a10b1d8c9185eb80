"""theta = u * v. With L2 gamma on (u, v), at balance |u| = |v| the penalty equals 2 gamma |theta|_1:
the Lasso (paper.md 2.5), so weight decay produces exact zeros."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from symexp.components import Symmetry


@dataclass
class Rescaling(Symmetry):
    name: Literal["rescaling"] = "rescaling"
    structure = ("sparsity",)

    def factor(self, base: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """u is the model's own init; v an independent draw of the same RMS scale."""
        rms = base.pow(2).mean().sqrt()
        v = torch.randn(base.shape, generator=gen, dtype=base.dtype).to(base.device) * rms
        return {"u": base.clone(), "v": v}

    def compose(self, raw: dict[str, torch.Tensor]) -> torch.Tensor:
        return raw["u"] * raw["v"]
