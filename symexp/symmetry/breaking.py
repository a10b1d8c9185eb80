"""Controls that break a symmetry while keeping the architecture: theta = compose(raw + b).

`offset`: b ~ N(0, scale^2), fixed per member. The mirror plane of the shifted factors no longer
passes through the origin, where weight decay pulls, so decay stops producing exact structure
(the fixed random bias of paper.md 2.1, the root of syre).
"""
from __future__ import annotations

import torch

KINDS = ("none", "offset")


def offsets(raw: dict[str, torch.Tensor], kind: str, scale: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Fixed offsets for one member's raw factors (empty when the symmetry is intact)."""
    if kind == "none":
        return {}
    if kind == "offset":
        return {k: scale * torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device) for k, v in raw.items()}
    raise ValueError(f"breaking.name: unknown {kind!r}; allowed: {', '.join(KINDS)}")


def shifted(raw: dict[str, torch.Tensor], fixed: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v + fixed[k] if k in fixed else v for k, v in raw.items()}
