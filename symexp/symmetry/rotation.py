"""W = U V with U [out, h], V [h, in]. Invariant under (U, V) -> (U R, R^T V) for any orthogonal R;
its mirrors (R = I - 2 n n^T) make rank-deficient W symmetric points, so noise and weight decay
push W to low rank (paper.md 3.2). With L2 gamma on (U, V), at balance the penalty equals
2 gamma |W|_* (nuclear norm), so decay soft-thresholds the singular values by gamma."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import torch

from symexp.components import Symmetry
from symexp.schema import Count


def factor(base: torch.Tensor, gen: torch.Generator, hidden: int | None = None) -> dict[str, torch.Tensor]:
    """base [out, in] -> {"U": [out, h], "V": [h, in]}, h = hidden or min(out, in).

    Both factors are fresh draws whose product has the RMS of the model's own init (entries of
    U V have std s^2 sqrt(h) for factor std s), so the symmetry changes the parametrisation, not
    the starting scale."""
    if base.dim() != 2:
        raise ValueError(f"symmetry rotation: needs a matrix weight, got shape {tuple(base.shape)}")
    out, inp = base.shape
    h = hidden or min(out, inp)
    s = (base.pow(2).mean().sqrt() / h ** 0.5).sqrt()
    draw = lambda *shape: torch.randn(shape, generator=gen, dtype=base.dtype).to(base.device) * s  # noqa: E731
    return {"U": draw(out, h), "V": draw(h, inp)}


def compose(raw: dict[str, torch.Tensor]) -> torch.Tensor:
    """[out, h] @ [h, in] -> [out, in]; stacked [M, ...] factors broadcast to [M, out, in]."""
    return raw["U"] @ raw["V"]


@dataclass
class Rotation(Symmetry):
    """The rotation symmetry with an inner width: h < min(out, in) also caps the rank of W at h."""

    hidden: Optional[Count] = None  # inner width h of W = U V; null = min(out, in)
    name: Literal["rotation"] = "rotation"
    structure = ("rank",)
    needs_matrices = True

    def factor(self, base: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        return factor(base, gen, self.hidden)

    compose = staticmethod(compose)
