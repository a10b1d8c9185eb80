"""Functional optimisers over stacked `[M, ...]` parameters with per-member hyperparameters.

torch.optim treats a stacked tensor as one parameter (no per-member lr or weight decay), so the
updates are written out here, each taking `[M]` lr and wd tensors. Two kinds of weight decay, kept
apart because only one is what the theory covers:

* coupled L2 (`sgd`, `adam`): g <- g + wd * p before the update (and, for Adam, before its moments),
  the gradient of loss + wd/2 |p|^2, hence gamma = wd/2 (paper.md 2.1). Adam's per-coordinate
  scaling then rescales the decay too, so Adam + L2 collapses at a far smaller wd than SGD.
* decoupled decay (`adamw`, Loshchilov & Hutter): p <- p (1 - lr * wd), outside the moments. It is
  not the gradient of any penalty on the data loss, so gamma = wd/2 does not apply to it.

The Adam/AdamW arithmetic follows torch.optim.Adam/AdamW (non-capturable, non-amsgrad) step by step,
so one member equals torch's optimiser to rounding (tests/test_optim.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

import torch

from symexp.components import Component
from symexp.errors import ConfigError
from symexp.schema import Count, Positive, Range

Tensors = dict[str, torch.Tensor]


def per_member(h: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Broadcast an `[M]` hyperparameter against an `[M, ...]` tensor."""
    return h.view(-1, *([1] * (like.dim() - 1)))


def sgd_init(params: Tensors, momentum: float) -> Tensors:
    return {k: torch.zeros_like(v) for k, v in params.items()} if momentum > 0 else {}


def sgd_update(params: Tensors, grads: Tensors, state: Tensors, lr: torch.Tensor, wd: torch.Tensor,
               momentum: float, decayed: frozenset[str]) -> tuple[Tensors, Tensors]:
    """One SGD(+momentum) step; lr, wd are `[M]`; `decayed` names the parameters that get L2."""
    new_params, new_state = {}, {}
    for k, p in params.items():
        g = grads[k] + per_member(wd, p) * p if k in decayed else grads[k]
        if momentum > 0:
            g = new_state[k] = momentum * state[k] + g
        new_params[k] = p - per_member(lr, p) * g
    return new_params, new_state


def adam_init(params: Tensors) -> Tensors:
    """First and second moments per parameter, and each member's step count `[M]` (bias correction)."""
    state = {f"exp_avg.{k}": torch.zeros_like(v) for k, v in params.items()}
    state.update({f"exp_avg_sq.{k}": torch.zeros_like(v) for k, v in params.items()})
    first = next(iter(params.values()))
    state["step"] = torch.zeros(first.shape[0], dtype=first.dtype, device=first.device)
    return state


def adam_update(params: Tensors, grads: Tensors, state: Tensors, lr: torch.Tensor, wd: torch.Tensor,
                betas: tuple[float, float], eps: float, decoupled: bool,
                decayed: frozenset[str]) -> tuple[Tensors, Tensors]:
    """One Adam step (decoupled=False: coupled L2, = torch.optim.Adam(weight_decay=wd)) or AdamW step
    (decoupled=True, = torch.optim.AdamW(weight_decay=wd)); lr, wd are `[M]`."""
    b1, b2 = betas
    step = state["step"] + 1
    bias1 = 1 - b1 ** step  # [M]
    bias2_sqrt = (1 - b2 ** step).sqrt()
    new_params, new_state = {}, {"step": step}
    for k, p in params.items():
        g = grads[k]
        if k in decayed and decoupled:
            p = p * (1 - per_member(lr * wd, p))
        elif k in decayed:
            g = g + per_member(wd, p) * p
        m = new_state[f"exp_avg.{k}"] = state[f"exp_avg.{k}"].lerp(g, 1 - b1)
        v = new_state[f"exp_avg_sq.{k}"] = state[f"exp_avg_sq.{k}"] * b2 + (1 - b2) * g * g
        denom = v.sqrt() / per_member(bias2_sqrt, p) + eps
        new_params[k] = p - per_member(lr / bias1, p) * m / denom
    return new_params, new_state


@dataclass(frozen=True)
class Rule:
    """The update rule of an optimiser component: its buffers and its step."""

    name: str = "sgd"  # sgd | adam (both coupled L2) | adamw (decoupled decay)
    momentum: float = 0.0  # sgd only
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    eps: float = 1e-8  # adam, adamw

    def init(self, params: Tensors) -> Tensors:
        return sgd_init(params, self.momentum) if self.name == "sgd" else adam_init(params)

    def update(self, params: Tensors, grads: Tensors, state: Tensors, lr: torch.Tensor, wd: torch.Tensor,
               decayed: frozenset[str]) -> tuple[Tensors, Tensors]:
        if self.name == "sgd":
            return sgd_update(params, grads, state, lr, wd, self.momentum, decayed)
        return adam_update(params, grads, state, lr, wd, self.betas, self.eps, self.name == "adamw", decayed)


@dataclass
class SGD(Component):
    """SGD (+ momentum) with coupled L2; `batch_size: null` is full-batch gradient descent."""

    name: Literal["sgd"] = "sgd"
    momentum: Annotated[float, Range(0, 1, hi_open=True)] = 0.0
    batch_size: Optional[Count] = None  # null = the whole training set every step
    schedule: Literal["constant", "cosine", "step"] = "constant"

    def rule(self) -> Rule:
        return Rule("sgd", momentum=self.momentum)


@dataclass
class Adam(Component):
    """Adam with coupled L2 (torch.optim.Adam's weight_decay): gamma = wd/2 holds."""

    name: Literal["adam"] = "adam"
    betas: list[Annotated[float, Range(0, 1, hi_open=True)]] = field(default_factory=lambda: [0.9, 0.999])
    eps: Positive = 1e-8
    batch_size: Optional[Count] = 32
    schedule: Literal["constant", "cosine", "step"] = "constant"

    def check(self, parts, c: dict) -> None:
        if len(self.betas) != 2:
            raise ConfigError(f"optim.betas: {self.betas!r}; expected two values in [0, 1)")

    def rule(self) -> Rule:
        return Rule(self.name, betas=tuple(self.betas), eps=self.eps)


@dataclass
class AdamW(Adam):
    """AdamW: decoupled decay outside the moments; gamma = wd/2 does not apply."""

    name: Literal["adamw"] = "adamw"


def schedule_factor(kind: str, step: int, total: int) -> float:
    """Multiplier of every member's base lr at `step` (shared by all members)."""
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / total))
    if kind == "step":  # Papyan, Han & Donoho (2020): x0.1 at 1/3 and at 2/3 of training
        return 0.1 ** (3 * step // total)
    raise ValueError(f"optim.schedule: unknown {kind!r}; allowed: constant, cosine, step")


def mean_schedule_factor(kind: str, total: int) -> float:
    """The mean of `schedule_factor` over steps 0 .. `total` - 1 of a run (its lr's mean over the base lr), in
    closed form: cosine's sum of cos(pi t / T) over those steps is exactly 1 (Dirichlet kernel), and step's
    factor 0.1^k holds on the ceil(k T / 3) <= t < ceil((k + 1) T / 3) steps."""
    if kind == "cosine":
        return 0.5 + 0.5 / total
    if kind == "step":
        edges = [-(-k * total // 3) for k in range(4)]  # ceil(k T / 3)
        return sum(0.1 ** k * (edges[k + 1] - edges[k]) for k in range(3)) / total
    return schedule_factor(kind, 0, total)  # constant: 1.0; an unknown kind raises there
