"""Controls that break a symmetry while keeping the architecture: theta = compose(raw + b).

`offset`: b ~ N(0, scale^2), fixed per member. The mirror plane of the shifted factors no longer
passes through the origin, where weight decay pulls, so decay stops producing exact structure
(the fixed random bias of paper.md 2.1, the root of syre).
`mask` (W-Asym of Lim et al. 2024, anchors.md A3): in every matrix / conv weight factor a fixed
fraction `mask_frac` of each row's entries, a different random subset per row, is pinned to fixed
values ~ N(0, scale^2); the trained values there are unused. No two units share their pinned
values, so no permutation maps the net to itself: units can neither merge nor die.
`syre` (symmetry removal) is `offset` at the published scale; `l2_init` centres the decay on the init.
`offset` and `mask` write one form, theta = where(P, c, raw + b) (offset: P empty, c = 0; mask: b = 0,
and P empty on biases), so the two controls of one model trace to the same graph: with compile, the
second job loads the first one's kernels from Inductor's cache instead of compiling its own. Where P is
empty it computes raw + b exactly, and with b = 0 raw itself.
`residual` (symmetry rotation only): b = scale * I on V, i.e. f(x) = U (V x + scale x), a residual
connection. The dynamics are those of U V' from V'_0 = V_0 + I, and decay on V pulls V' to I,
not to a rank-deficient point (paper.md, Figure 1 middle, residual control note).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Literal, Optional

import torch

from symexp.components import Component
from symexp.errors import ConfigError
from symexp.schema import NonNeg, Positive, Range

PINNED = ":pinned"  # fixed[k + PINNED]: the bool mask of raw[k]'s pinned entries; fixed[k + VALUES] their values
VALUES = ":values"
DECAY = ":decay"  # fixed[k + DECAY]: per-entry weights of raw[k]'s weight decay (syre's diagonal D)
Tensors = dict[str, torch.Tensor]


@dataclass
class Intact(Component):
    """The symmetry is left intact: no fixed tensors."""

    name: Literal["none"] = "none"
    scale: NonNeg = 0.0

    def offsets(self, raw: Tensors, gen: torch.Generator) -> Tensors:
        return {}


@dataclass
class Offset(Component):
    name: Literal["offset"] = "offset"
    scale: NonNeg = 1.0  # std of the fixed random offset b

    def offsets(self, raw: Tensors, gen: torch.Generator) -> Tensors:
        return pinned_form(raw, {k: self.scale * torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device)
                                 for k, v in raw.items()}, {})


@dataclass
class Syre(Component):
    """Symmetry removal (syre; Ziyin, Xu, Chuang, ICLR 2025, arXiv 2408.15495): train l(theta + theta_0)
    + gamma |theta|^2 with a fixed random theta_0. It is `offset` with the published scale as default:
    sigma_0 = 0.01 / sqrt(d), d read here as each raw tensor's fan-in (entries per row; a vector's size)."""

    name: Literal["syre"] = "syre"
    sigma0: Optional[Positive] = None  # null = 0.01 / sqrt(fan-in) per tensor
    # the "advanced" variant for rotation-type symmetries: decay gamma theta^T D theta with a fixed random
    # positive diagonal D (entries ~ U(0.5, 1.5): our choice of distribution), so no rotation commutes with it
    diagonal: bool = False

    def offsets(self, raw: Tensors, gen: torch.Generator) -> Tensors:
        out = {}
        for k, v in raw.items():
            scale = self.sigma0 or 0.01 / math.sqrt(v[0].numel() if v.dim() > 1 else v.numel())
            out[k] = scale * torch.randn(v.shape, generator=gen, dtype=v.dtype).to(v.device)
            if self.diagonal:
                out[k + DECAY] = (0.5 + torch.rand(v.shape, generator=gen, dtype=v.dtype)).to(v.device)
        return out


@dataclass
class L2Init(Component):
    """L2-Init (Kumar et al., arXiv 2308.11958): decay pulls the weights towards their initial values,
    not towards 0. Same construction as `offset` with the fixed centre at the init: theta = raw + b,
    b = the member's initial raw tensors, raw starting at 0, so decay on raw pulls theta to theta_init."""

    name: Literal["l2_init"] = "l2_init"

    def offsets(self, raw: Tensors, gen: torch.Generator) -> Tensors:
        return {k: v.clone() for k, v in raw.items()}

    def start(self, raw: Tensors) -> Tensors:
        """The trained tensors start at 0: theta_0 = 0 + b = the init."""
        return {k: torch.zeros_like(v) for k, v in raw.items()}


@dataclass
class Mask(Component):
    name: Literal["mask"] = "mask"
    scale: NonNeg = 0.05  # std of the pinned values
    mask_frac: Annotated[float, Range(0, 1, lo_open=True)] = 0.125  # fraction of each row's entries pinned

    def offsets(self, raw: Tensors, gen: torch.Generator) -> Tensors:
        pins = {}
        for k, v in raw.items():
            if v.dim() < 2:  # biases, norms: one per unit, nothing to distinguish rows by
                continue
            rows, cols = v.shape[0], v[0].numel()
            pinned = torch.zeros(rows, cols, dtype=torch.bool)
            for i in range(rows):
                pinned[i, torch.randperm(cols, generator=gen)[:max(1, math.ceil(self.mask_frac * cols))]] = True
            values = self.scale * torch.randn(v.shape, generator=gen, dtype=v.dtype)
            pins[k] = (pinned.view(v.shape).to(v.device), (values * pinned.view(v.shape)).to(v.device))
        return pinned_form(raw, {}, pins)


@dataclass
class Residual(Component):
    name: Literal["residual"] = "residual"
    scale: NonNeg = 1.0  # f(x) = U (V x + scale x)

    def check(self, parts, c: dict) -> None:
        sym = parts.symmetry
        if getattr(sym, "name", None) != "rotation":
            raise ConfigError(f"breaking.name: residual needs symmetry rotation (W = U V), got {sym.name!r}")
        dim = getattr(parts.data, "dim", None)
        if sym.hidden is not None and dim is not None and sym.hidden != dim:
            raise ConfigError(f"symmetry.hidden: {sym.hidden}; breaking=residual (U (V x + x)) needs hidden = "
                              f"data.dim ({dim}) or null")

    def offsets(self, raw: Tensors, gen: torch.Generator) -> Tensors:
        vs = {k: v for k, v in raw.items() if k.endswith(".V")}
        for k, v in vs.items():
            if v.shape[0] != v.shape[1]:  # U (V x + x) needs V square: h = in
                raise ConfigError(f"breaking.name: residual needs V square (h = in), got {k} {tuple(v.shape)}")
        return {k: self.scale * torch.eye(v.shape[0], dtype=v.dtype, device=v.device) for k, v in vs.items()}


def pinned_form(raw: Tensors, b: Tensors, pins: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> Tensors:
    """Offset's and mask's shared fixed tensors for theta = where(P, c, raw + b): b (0 where not
    given), and P with its values c (none pinned where not given)."""
    fixed = {}
    for k, v in raw.items():
        pinned, values = pins.get(k, (torch.zeros_like(v, dtype=torch.bool), torch.zeros_like(v)))
        fixed[k], fixed[k + PINNED], fixed[k + VALUES] = b.get(k, torch.zeros_like(v)), pinned, values
    return fixed


def shifted(raw: Tensors, fixed: Tensors) -> Tensors:
    """raw + b, with pinned entries replaced (offset, mask); works with or without the [M] axis."""
    out = {}
    for k, v in raw.items():
        if k + PINNED in fixed:
            v = torch.where(fixed[k + PINNED], fixed[k + VALUES], v + fixed[k])
        elif k in fixed:
            v = v + fixed[k]
        out[k] = v
    return out
