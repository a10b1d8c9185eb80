"""Loss-of-plasticity metrics (Dohare et al., Nature 2024), batched over an ensemble axis M.

The first three follow shibhansh/loss-of-plasticity (commit 63c35f3):
  * dead units: ``lop/permuted_mnist/online_expr.py``, ``(m.abs().sum(dim=0) == 0).sum()`` on the
    features ``m`` of the first 2000 examples of a new task: a count of units that never activate;
  * effective rank: ``lop/utils/miscellaneous.py:compute_effective_rank``, exp(-sum_k p_k log p_k)
    with p_k = sigma_k / sum_j sigma_j, 0 log 0 = 0, over the singular values of the raw (uncentred)
    features ``examples x units``. Their "approximate rank" (smallest k whose sigma^2 cover 99 %) is
    ``symexp.metrics.energy_rank(F, 0.99)``;
  * weight magnitude: ``online_expr.py`` logs sum |W| of each layer's weight (biases excluded);
    ``lop/slowly_changing_regression/expr.py`` logs mean |W|.

Also after LoP: the per-example zero fraction (``expr.py``, ``to_log_activation``: the fraction of hidden
units exactly 0 on the current training example), which symexp accumulates in the train step itself
(symexp.models.mlp, ``count_zeros``) and :func:`zero_fraction` reads out.

The mirror-plane counts are ours (paper.md 6): they say how many units sit on a symmetric subspace of
the loss, which is not the same as being dead. A ReLU unit whose bias keeps it below zero on every
probe input is dead, but its weights are far from the plane {incoming = outgoing = 0}; a unit on that
plane is dead too, and it stays there under gradient updates (Theorem 1), which is the paper's claim.
"""
from __future__ import annotations

import torch

from .homogeneity import dead_fraction, independent_units, unit_vectors
from .rank import erank

__all__ = [
    "dead_units",
    "feature_effective_rank",
    "weight_magnitude",
    "zero_plane_units",
    "duplicate_units",
    "zero_plane_count",
    "duplicate_count",
    "zero_fraction",
    "unit_norm_ratio",
    "left_plane_count",
]


def _features(F: torch.Tensor) -> torch.Tensor:
    if F.dim() != 3:
        raise ValueError(f"features must be [M, N, units] (post-activation, on a probe set), got {tuple(F.shape)}")
    return F


def dead_units(F: torch.Tensor) -> torch.Tensor:
    """Number of units whose activation is exactly 0 on every probe example; ``[M, N, h] -> [M]``."""
    return (_features(F).abs().sum(dim=1) == 0).sum(dim=1).to(F.dtype)


def feature_effective_rank(F: torch.Tensor) -> torch.Tensor:
    """exp(entropy of sigma / sum sigma) of the features ``[M, N, h]`` as LoP computes it; ``-> [M]``.

    The one difference from LoP: an all-zero feature matrix (every unit dead) reads 0 here; theirs
    reads 1, because 0/0 is NaN and fails their ``p > 0`` test, leaving entropy 0.
    """
    return erank(_features(F))


def weight_magnitude(W: torch.Tensor, reduce: str = "sum") -> torch.Tensor:
    """sum |W| (LoP's permuted-MNIST log) or mean |W| (their slowly-changing regression); ``[M, ...] -> [M]``."""
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    flat = W.reshape(W.shape[0], -1).abs()
    return flat.sum(dim=1) if reduce == "sum" else flat.mean(dim=1)


def zero_plane_units(
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    *extras: torch.Tensor,
    tau: float = 1e-3,
    scale: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Units with |(incoming, extras, outgoing)| <= tau * scale: on the rescaling/sign mirror plane.

    ``w_in [M, h, ...]``, ``w_out [M, o, h, ...]``, extras (the unit's own bias, ...) ``[M, h, ...]``, as in
    :func:`symexp.metrics.unit_vectors`. ``scale``: the reference unit norm, a float or ``[M]`` (e.g. the
    mean unit norm at initialisation, so that a layer shrinking as a whole still counts); default the
    member's largest unit norm. Returns the count ``[M]``.
    """
    return zero_plane_count(unit_vectors(w_in, w_out, *extras), tau=tau, scale=scale)


def zero_plane_count(V: torch.Tensor, tau: float = 1e-3, scale: torch.Tensor | float | None = None) -> torch.Tensor:
    """:func:`zero_plane_units` of unit vectors ``V [M, h, p]`` already assembled (e.g. a model's probe views)."""
    return on_zero_plane(V, tau, scale).sum(dim=1).to(V.dtype)


def on_zero_plane(V: torch.Tensor, tau: float, scale: torch.Tensor | float | None) -> torch.Tensor:
    """Which units of ``V [M, h, p]`` have norm <= tau * scale (default scale: the member's largest unit norm);
    ``-> [M, h]`` bool."""
    norms = torch.linalg.vector_norm(V.double(), dim=-1)  # [M, h]
    ref = norms.amax(dim=1) if scale is None else torch.as_tensor(scale, dtype=torch.float64, device=norms.device)
    if ref.dim() > 1 or (ref.dim() == 1 and ref.shape[0] != norms.shape[0]):
        raise ValueError(f"scale must be a float or a [M] tensor with M={norms.shape[0]}, got shape {tuple(ref.shape)}")
    return norms <= tau * ref.reshape(-1, 1)


def duplicate_units(
    w_in: torch.Tensor,
    w_out: torch.Tensor,
    *extras: torch.Tensor,
    tol: float = 0.1,
    dead_tau: float = 0.1,
) -> torch.Tensor:
    """Live units that duplicate another (the permutation mirror plane v_i = v_j); ``-> [M]``.

    Live units (norm >= dead_tau * the largest, as in :func:`symexp.metrics.dead_fraction`) minus
    :func:`symexp.metrics.independent_units`: a group of k near-identical units adds k - 1. Units near
    zero are left to :func:`zero_plane_units`, so the two counts never share a unit when tau <= dead_tau.
    """
    return duplicate_count(unit_vectors(w_in, w_out, *extras), tol=tol, dead_tau=dead_tau)


def duplicate_count(V: torch.Tensor, tol: float = 0.1, dead_tau: float = 0.1) -> torch.Tensor:
    """:func:`duplicate_units` of unit vectors ``V [M, h, p]`` already assembled."""
    live = V.shape[1] * (1 - dead_fraction(V, tau=dead_tau).double())
    return (live.round() - independent_units(V, tol=tol, dead_tau=dead_tau).double()).to(V.dtype)


def zero_fraction(counter: torch.Tensor) -> torch.Tensor:
    """Mean fraction of a layer's units at exactly 0 per training example, from the train step's counter
    ``[M, 2]`` = (sum over examples of that fraction, examples); NaN where no example was counted; ``-> [M]``."""
    if counter.dim() != 2 or counter.shape[1] != 2:
        raise ValueError(f"counter must be [M, 2] (fraction sum, examples), got {tuple(counter.shape)}")
    n = counter[:, 1].double()
    return torch.where(n > 0, counter[:, 0].double() / n.clamp_min(1), torch.full_like(n, float("nan")))


def unit_norm_ratio(V: torch.Tensor, V0: torch.Tensor) -> torch.Tensor:
    """Each unit's norm over its norm at initialisation, ``V, V0 [M, h, p] -> [M, h]``: a continuous
    distance to the zero plane (0 on it, 1 where it started)."""
    return torch.linalg.vector_norm(V.double(), dim=-1) / torch.linalg.vector_norm(V0.double(), dim=-1).clamp_min(1e-30)


def left_plane_count(V_prev: torch.Tensor, V: torch.Tensor, tau: float, scale: torch.Tensor | float) -> torch.Tensor:
    """Units within tau * scale of the zero plane in ``V_prev [M, h, p]`` and beyond it in ``V``: by Theorem 1
    a unit exactly on the plane gets no gradient and, under decay to 0, stays; ``-> [M]``."""
    return (on_zero_plane(V_prev, tau, scale) & ~on_zero_plane(V, tau, scale)).sum(dim=1).to(V.dtype)
