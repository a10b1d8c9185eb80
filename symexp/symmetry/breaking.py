"""Controls that break a symmetry while keeping the architecture: theta = compose(raw + b).

`offset`: b ~ N(0, scale^2), fixed per member. The mirror plane of the shifted factors no longer
passes through the origin, where weight decay pulls, so decay stops producing exact structure
(the fixed random bias of paper.md 2.1, the root of syre).
`residual` (symmetry rotation only): b = scale * I on V, i.e. f(x) = U (V x + scale x), a residual
connection. The dynamics are those of U V' from V'_0 = V_0 + I, and decay on V pulls V' to I,
not to a rank-deficient point (paper.md, Figure 1 middle, residual control note).
"""
from __future__ import annotations

import torch

KINDS = ("none", "offset", "residual")


def offsets(raw: dict[str, torch.Tensor], kind: str, scale: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Fixed offsets for one member's raw factors (empty when the symmetry is intact)."""
    if kind == "none":
        return {}
    if kind == "offset":
        return {k: scale * torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device) for k, v in raw.items()}
    if kind == "residual":
        vs = {k: v for k, v in raw.items() if k.endswith(".V")}
        for k, v in vs.items():
            if v.shape[0] != v.shape[1]:  # U (V x + x) needs V square: h = in
                raise ValueError(f"breaking.name: residual needs V square (h = in), got {k} {tuple(v.shape)}")
        return {k: scale * torch.eye(v.shape[0], dtype=v.dtype, device=v.device) for k, v in vs.items()}
    raise ValueError(f"breaking.name: unknown {kind!r}; allowed: {', '.join(KINDS)}")


def shifted(raw: dict[str, torch.Tensor], fixed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v + fixed[k] if k in fixed else v for k, v in raw.items()}
