"""Functional optimisers over stacked `[M, ...]` parameters with per-member hyperparameters.

torch.optim treats a stacked tensor as one parameter (no per-member lr or weight decay), so the
update is written out here. Weight decay is coupled L2: g <- g + wd * p, the gradient of
loss + wd/2 |p|^2, hence gamma = wd/2 (paper.md 2.1).
"""
from __future__ import annotations

import math

import torch

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


def schedule_factor(kind: str, step: int, total: int) -> float:
    """Multiplier of every member's base lr at `step` (shared by all members)."""
    if kind == "constant":
        return 1.0
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * step / total))
    raise ValueError(f"optim.schedule: unknown {kind!r}; allowed: constant, cosine")
