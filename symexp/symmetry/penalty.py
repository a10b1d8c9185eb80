"""No symmetry: theta trained directly, plus the soft penalty lam |O^T theta|^2 on the trained loss.

The explicit baseline for DCS (symexp.symmetry.dcs, same O from (k, seed)): a quadratic penalty
only shrinks O^T theta towards 0 (by 1 / (1 + gamma + lam) in whitened regression), it never makes
it exactly 0, and GD needs lr < 1 / lam, so lam cannot be raised freely. The engine adds
`penalty(theta)` to each member's trained loss; the logged task loss stays the data loss alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from symexp.components import Symmetry
from symexp.schema import Count, NonNeg
from symexp.symmetry.dcs import basis, check_same_basis


@dataclass
class Penalty(Symmetry):
    """theta = w with the penalty lam * sum over weights of |O^T theta|^2 (O per weight size)."""

    k: Count = 5  # the O of dcs: same (k, seed), same basis
    seed: int = 0
    lam: NonNeg = 10.0  # GD needs lr < 1 / lam
    name: Literal["penalty"] = "penalty"

    def check(self, parts, c: dict) -> None:
        check_same_basis(self, c)

    def factor(self, base: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        return {"w": base.clone()}

    def compose(self, raw: dict[str, torch.Tensor]) -> torch.Tensor:
        return raw["w"]

    def penalty(self, theta: dict[str, torch.Tensor]) -> torch.Tensor:
        """One member's effective weights {name: tensor} -> lam * sum |O^T theta|^2 (a scalar)."""
        total = 0.0
        for t in theta.values():
            o = basis(t.numel(), self.k, self.seed, t.dtype, t.device)
            total = total + (t.reshape(-1) @ o).pow(2).sum()
        return self.lam * total
