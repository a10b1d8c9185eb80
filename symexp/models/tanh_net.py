"""f(x) = sum_i u_i tanh(w_i . x): the two-layer tanh network of Theorem 1 (paper.md 2.2-2.4, rows T1-T3).

One member's parameters are ONE tensor `weight` [h, 1 + d]: row i is hidden unit i, column 0 its
output weight u_i, columns 1: its input weights w_i. The row layout makes both mirrors of the net
plain index sets of the flattened theta:
  * sign mirror of unit i:  (u_i, w_i) -> -(u_i, w_i) (tanh is odd); O = that row's coordinates,
    symmetric point: the dead unit (u_i, w_i) = 0;
  * permutation mirror of units a, b: swap rows a and b; O = (e_a - e_b)/sqrt(2) (x) I_{1+d},
    symmetric point: identical units.
The init can put units exactly on those points: rows [0, dead_units) start at 0, and the next
`twin_pairs` pairs of rows start identical (T1). `mirror_projectors` gives the two P = O O^T.

For T1 the net also keeps its training set and measures, at every eval, the Hessian of the
full-batch data loss and its cross blocks P H (I - P) (`probe_hessian`): Theorem 1 (2) is a
statement about the loss, so the probe needs the data the loss is taken over.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.func import grad, hessian, vmap

from symexp.components import Model
from symexp.errors import ConfigError
from symexp.schema import Count, NonNegInt, Positive

ROTATION_SEED = 12_345  # the random basis whose cross block shows that H is not block-diagonal in general


def forward(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One member: theta [h, 1 + d], x [n, d] -> f(x) [n]."""
    return torch.tanh(x @ theta[:, 1:].T) @ theta[:, 0]


def mse(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The engine's regression loss (symexp.ensemble.task_loss) of one member: mean (f(x) - y)^2."""
    return (forward(theta, x) - y).pow(2).mean()


def mirror_projectors(width: int, dim: int, dead_units: int, twin_pairs: int,
                      dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    """P = O O^T [p, p] (p = width * (1 + dim), row-major theta) of the init's symmetric points:
    `sign` spans the dead units' rows, `perm` the differences of the twin rows, and `rotated` is
    `sign` turned by a fixed random orthogonal Q (Q P Q^T: same rank, a basis unrelated to the net)."""
    row, p = 1 + dim, width * (1 + dim)
    sign = torch.zeros(p, p, dtype=dtype)
    for i in range(dead_units):
        sign[i * row:(i + 1) * row, i * row:(i + 1) * row] = torch.eye(row, dtype=dtype)
    perm = torch.zeros(p, p, dtype=dtype)
    for k in range(twin_pairs):
        a, b = dead_units + 2 * k, dead_units + 2 * k + 1
        n = torch.zeros(width, dtype=dtype)
        n[a], n[b] = 1 / math.sqrt(2), -1 / math.sqrt(2)
        perm += torch.kron(torch.outer(n, n), torch.eye(row, dtype=dtype))
    gen = torch.Generator().manual_seed(ROTATION_SEED)
    q = torch.linalg.qr(torch.randn(p, p, generator=gen, dtype=torch.float64))[0].to(dtype)
    return {"sign": sign, "perm": perm, "rotated": q @ sign @ q.T}


@dataclass
class TanhNetConfig(Model):
    name: Literal["tanh_net"] = "tanh_net"
    width: Count = 4  # hidden units h of f(x) = sum_i u_i tanh(w_i . x)
    init_scale: Positive = 0.5  # std of each u_i and w_i entry at init
    dead_units: NonNegInt = 0  # units 0..dead_units-1 start at (u, w) = 0: the sign mirror's symmetric point
    twin_pairs: NonNegInt = 0  # the next pairs of units start identical: the permutation mirror's symmetric point
    probe_hessian: bool = False  # measure the full-batch loss Hessian and its mirror cross blocks every eval
    reads = ("vector",)
    matrix_only = True  # one parameter, weight [h, 1 + d]

    def check(self, parts, c: dict) -> None:
        if self.dead_units + 2 * self.twin_pairs > self.width:
            raise ConfigError(f"model.width: {self.width} units cannot hold dead_units {self.dead_units} + "
                              f"2 x twin_pairs {self.twin_pairs}")
        if self.probe_hessian and not (self.dead_units and self.twin_pairs):
            raise ConfigError("model.probe_hessian: needs dead_units >= 1 and twin_pairs >= 1 (else its mirror "
                              "projectors are 0 and their cross blocks trivially vanish)")

    def build(self, data) -> nn.Module:
        return TanhNet(data.x.shape[1], self.width, self.init_scale, self.dead_units, self.twin_pairs,
                       (data.x, data.y) if self.probe_hessian else None)


class TanhNet(nn.Module):
    def __init__(self, dim: int, width: int, init_scale: float, dead_units: int = 0, twin_pairs: int = 0,
                 hessian_data: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.init_scale, self.dead_units, self.twin_pairs = init_scale, dead_units, twin_pairs
        self.weight = nn.Parameter(torch.empty(width, 1 + dim))
        self.reset_parameters()
        # per unit: |(u_i, w_i)| (T2: which units died); the whole net: |theta|
        self.probes = {"weight": ("norm",), **{f"unit{i}": ("norm",) for i in range(width)}}
        if dead_units:
            self.probes["sign_break"] = ("norm",)  # O^T theta of the sign mirror: the dead units' rows
        if twin_pairs:
            self.probes["perm_break"] = ("norm",)  # O^T theta of the permutation mirror: twin differences
        # a plain attribute, not a buffer: the engine stacks buffers per member as training state
        self.hessian_data = hessian_data
        if hessian_data is not None:
            self.probes["hessian"] = ("norm",)
            for name in ("sign", "perm", "rotated"):
                self.probes[f"hessian_cross_{name}"] = ("norm",)  # P H (I - P)
                self.probes[f"grad_break_{name}"] = ("norm",)  # P grad: what would leave the symmetric point

    def reset_parameters(self) -> None:
        with torch.no_grad():
            nn.init.normal_(self.weight, std=self.init_scale)
            self.weight[:self.dead_units] = 0.0
            for k in range(self.twin_pairs):
                a = self.dead_units + 2 * k
                self.weight[a + 1] = self.weight[a]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [n, d] -> [n]
        return forward(self.weight, x)

    def probe_views(self, theta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The measured tensors of `weight` [M, h, 1 + d] (norms of each, symexp.evaluation.weights.measure)."""
        w = theta["weight"]
        views = {"weight": w, **{f"unit{i}": w[:, i] for i in range(w.shape[1])}}
        views["sign_break"] = w[:, :self.dead_units]
        pairs = self.dead_units + 2 * torch.arange(self.twin_pairs)
        views["perm_break"] = (w[:, pairs] - w[:, pairs + 1]) / math.sqrt(2)
        if self.hessian_data is not None:
            views.update(self._hessian_views(w))
        return views

    def _hessian_views(self, w: torch.Tensor) -> dict[str, torch.Tensor]:
        m, h, row = w.shape
        flat = w.reshape(m, -1)
        x, y = (t.to(w.device, w.dtype) for t in self.hessian_data)
        loss = lambda t: mse(t.reshape(h, row), x, y)  # noqa: E731
        hess, g = vmap(hessian(loss))(flat), vmap(grad(loss))(flat)  # [M, p, p], [M, p]
        views = {"hessian": hess}
        eye = torch.eye(h * row, dtype=w.dtype, device=w.device)
        for name, p in mirror_projectors(h, row - 1, self.dead_units, self.twin_pairs, w.dtype).items():
            p = p.to(w.device)
            views[f"hessian_cross_{name}"] = p @ hess @ (eye - p)
            views[f"grad_break_{name}"] = g @ p
        return views
