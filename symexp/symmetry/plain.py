"""theta trained directly."""
from __future__ import annotations

import torch


def factor(base: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    return {"w": base.clone()}


def compose(raw: dict[str, torch.Tensor]) -> torch.Tensor:
    return raw["w"]
