"""Controls that break a symmetry while keeping the architecture: theta = compose(raw + b).

`offset`: b ~ N(0, scale^2), fixed per member. The mirror plane of the shifted factors no longer
passes through the origin, where weight decay pulls, so decay stops producing exact structure
(the fixed random bias of paper.md 2.1, the root of syre).
`mask` (W-Asym of Lim et al. 2024, anchors.md A3): in every matrix / conv weight factor a fixed
fraction `mask_frac` of each row's entries, a different random subset per row, is pinned to fixed
values ~ N(0, scale^2); the trained values there are unused. No two units share their pinned
values, so no permutation maps the net to itself: units can neither merge nor die.
`residual` (symmetry rotation only): b = scale * I on V, i.e. f(x) = U (V x + scale x), a residual
connection. The dynamics are those of U V' from V'_0 = V_0 + I, and decay on V pulls V' to I,
not to a rank-deficient point (paper.md, Figure 1 middle, residual control note).
"""
from __future__ import annotations

import math

import torch

KINDS = ("none", "offset", "mask", "residual")
PINNED = ":pinned"  # fixed[k + PINNED] is the bool mask of raw[k]'s pinned entries; fixed[k] their values


def offsets(raw: dict[str, torch.Tensor], kind: str, scale: float, gen: torch.Generator,
            mask_frac: float = 0.125) -> dict[str, torch.Tensor]:
    """Fixed offsets (or pinned entries) for one member's raw factors (empty when the symmetry is intact)."""
    if kind == "none":
        return {}
    if kind == "mask":
        fixed = {}
        for k, v in raw.items():
            if v.dim() < 2:  # biases, norms: one per unit, nothing to distinguish rows by
                continue
            rows, cols = v.shape[0], v[0].numel()
            pinned = torch.zeros(rows, cols, dtype=torch.bool)
            for i in range(rows):
                pinned[i, torch.randperm(cols, generator=gen)[:max(1, math.ceil(mask_frac * cols))]] = True
            values = scale * torch.randn(v.shape, generator=gen, dtype=v.dtype)
            fixed[k] = (values * pinned.view(v.shape)).to(v.device)
            fixed[k + PINNED] = pinned.view(v.shape).to(v.device)
        return fixed
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
    """raw + b, or raw with its pinned entries replaced (mask); works with or without the [M] axis."""
    out = {}
    for k, v in raw.items():
        if k + PINNED in fixed:
            v = torch.where(fixed[k + PINNED], fixed[k], v)
        elif k in fixed:
            v = v + fixed[k]
        out[k] = v
    return out
