"""No symmetry: theta trained directly, plus the soft penalty lam |O^T theta|^2 on the trained loss.

The explicit baseline for DCS (symexp.symmetry.dcs, same O from (k, seed)): a quadratic penalty
only shrinks O^T theta towards 0 (by 1 / (1 + gamma + lam) in whitened regression), it never makes
it exactly 0, and GD needs lr < 1 / lam, so lam cannot be raised freely. The engine adds
`penalty(theta)` to each member's trained loss; the logged task loss stays the data loss alone.
"""
from __future__ import annotations

import torch

from symexp.symmetry.dcs import basis


class Penalty:
    """theta = w with the penalty lam * sum over weights of |O^T theta|^2 (O per weight size)."""

    def __init__(self, k: int = 5, seed: int = 0, lam: float = 10.0):
        self.k, self.seed, self.lam = k, seed, lam

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


def configure(spec: dict) -> Penalty:
    """The penalty baseline of a `symmetry` config (name: penalty, k, seed, lam; symexp.config.PenaltySymmetry)."""
    return Penalty(**{key: v for key, v in spec.items() if key != "name"})
