"""theta trained directly: no symmetry added (the baseline every symmetry is compared with)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from symexp.components import Symmetry


@dataclass
class Plain(Symmetry):
    name: Literal["plain"] = "plain"

    def factor(self, base: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        return {"w": base.clone()}

    def compose(self, raw: dict[str, torch.Tensor]) -> torch.Tensor:
        return raw["w"]
