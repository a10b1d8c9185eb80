"""DCS, differentiable constraint by symmetry (paper.md 5): impose O^T theta = 0 on any weight.

    theta = (I - O O^T) w + O (a * b),     raw w in R^p (the weight flattened), a, b in R^k

O [p, k] has orthonormal columns, fixed and shared by every member (drawn from `seed`). Then
O^T theta = a * b exactly, and the artificial mirror (a, b) -> (-a, -b) leaves theta unchanged;
its symmetric point a = b = 0 is the constrained theta. With L2 gamma on (a, b), at balance
|a_i| = |b_i| the penalty is 2 gamma |O^T theta|_1 (paper.md 2.5), so weight decay above a finite
threshold (symexp.theory.dcs_threshold) makes the constraint hold exactly, not approximately.

The same reparametrisation serves the batched engine (`DCS(k, seed).factor / .compose`) and a
plain `nn.Linear` through `torch.nn.utils.parametrize` (`register_dcs`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from symexp.components import Symmetry
from symexp.errors import ConfigError
from symexp.schema import Count

_BASES: dict[tuple, torch.Tensor] = {}


def basis(p: int, k: int, seed: int, dtype: torch.dtype = torch.float64,
          device: torch.device | str = "cpu") -> torch.Tensor:
    """O [p, k] with orthonormal columns: the Q of a float64 Gaussian drawn from `seed` (numpy).

    Cached per (p, k, seed, dtype, device), so every member, every step and every metric sees the
    very same tensor, and every device and dtype the same numbers. numpy draws it because the first
    call may come inside the engine's vmap, where torch's random ops are refused."""
    if not 0 < k <= p:
        raise ValueError(f"dcs: k = {k} constrained directions need 1 <= k <= p = {p} (the weight's size)")
    key = (p, k, seed, dtype, torch.device(device))
    if key not in _BASES:
        q, r = torch.linalg.qr(torch.from_numpy(np.random.default_rng(seed).standard_normal((p, k))))
        q = q * torch.sign(torch.diagonal(r))  # fix the QR's column signs: O depends on the draw alone
        _BASES[key] = q.to(device, dtype)
    return _BASES[key]


def constrain(w: torch.Tensor, s: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """(I - O O^T) w + O s for w [..., p], s [..., k]: the theta whose O^T theta is s."""
    return w - (w @ o - s) @ o.T


@dataclass
class DCS(Symmetry):
    """The DCS symmetry for one (k, seed): `factor` one member's base weight, `compose` raw -> theta."""

    k: Count = 5  # constrained directions: O^T theta = 0 with O [p, k] orthonormal
    seed: int = 0  # draws O; shared by every member (must match metrics.constraint when that is set)
    name: Literal["dcs"] = "dcs"

    def check(self, parts, c: dict) -> None:
        check_same_basis(self, c)

    def factor(self, base: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        """w is the model's own init; a, b [k] independent draws of its RMS scale (like rescaling)."""
        rms = base.pow(2).mean().sqrt()
        draw = lambda: torch.randn(self.k, generator=gen, dtype=base.dtype).to(base.device) * rms  # noqa: E731
        return {"w": base.clone(), "a": draw(), "b": draw()}

    def compose(self, raw: dict[str, torch.Tensor]) -> torch.Tensor:
        """w [*lead, *shape], a, b [*lead, k] -> theta [*lead, *shape]; lead = () or (M,)."""
        w, s = raw["w"], raw["a"] * raw["b"]
        lead = s.shape[:-1]
        p = w[(0,) * len(lead)].numel()
        o = basis(p, self.k, self.seed, w.dtype, w.device)
        return constrain(w.reshape(*lead, p), s, o).reshape(w.shape)


def check_same_basis(sym, c: dict) -> None:
    """DCS / penalty and the constraint metric must mean the same O (paper.md 5)."""
    spec = c["metrics"]["constraint"]
    if spec["k"] and (sym.k, sym.seed) != (spec["k"], spec["seed"]):
        raise ConfigError(f"metrics.constraint (k={spec['k']}, seed={spec['seed']}) differs from symmetry "
                          f"(k={sym.k}, seed={sym.seed}); set both to the same O")


class DCSParametrization(nn.Module):
    """theta = (I - O O^T) w + O (a * b) as a `torch.nn.utils.parametrize` parametrisation.

    The parametrised tensor itself is the raw w (its original init); a, b are trainable parameters
    of this module, so `module.parameters()` holds all three and one optimiser with weight decay
    trains them (decay on a, b is what makes O^T theta exactly 0)."""

    def __init__(self, o: torch.Tensor, init: torch.Tensor):
        super().__init__()
        self.register_buffer("o", o)
        k = o.shape[1]
        rms = init.detach().pow(2).mean().sqrt()
        self.a = nn.Parameter(torch.randn(k, dtype=init.dtype, device=init.device) * rms)
        self.b = nn.Parameter(torch.randn(k, dtype=init.dtype, device=init.device) * rms)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return constrain(w.reshape(-1), self.a * self.b, self.o).reshape(w.shape)


def register_dcs(module: nn.Module, o: torch.Tensor, name: str = "weight") -> DCSParametrization:
    """Constrain `module.<name>` (e.g. an nn.Linear's [out, in] weight, flattened: p = out * in) to
    O^T theta = 0 through DCS; returns the parametrisation (its a, b are `module`'s parameters now)."""
    weight = getattr(module, name)
    if o.shape[0] != weight.numel():
        raise ValueError(f"dcs: O has {o.shape[0]} rows, {name} has {weight.numel()} entries")
    par = DCSParametrization(o.to(weight.device, weight.dtype), weight)
    parametrize.register_parametrization(module, name, par)
    return par
