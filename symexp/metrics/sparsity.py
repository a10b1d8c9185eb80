"""Sparsity metrics for parameter tensors batched over an ensemble axis M.

Each function takes ``theta`` of shape ``[M, ...]`` (everything after dim 0 is one
member's parameters) and returns a tensor ``[M]`` in the input's floating dtype.
"""
import torch

__all__ = ["frac_zero", "l1_l2_ratio"]


def _flat(theta: torch.Tensor) -> torch.Tensor:
    return theta.reshape(theta.shape[0], -1)


def frac_zero(theta: torch.Tensor, tau: float = 1e-3) -> torch.Tensor:
    """Fraction of entries with |θ_i| < tau·max_j|θ_j| or θ_i == 0; ``[M, ...] -> [M]``.

    The ``== 0`` clause makes an all-zero member have sparsity 1.0 and ``tau=0`` count exact zeros.
    """
    x = _flat(theta).abs()
    threshold = tau * x.amax(dim=1, keepdim=True)
    small = (x < threshold) | (x == 0)
    return small.to(theta.dtype).mean(dim=1)


def l1_l2_ratio(theta: torch.Tensor) -> torch.Tensor:
    """‖θ‖₁/‖θ‖₂ per member (1 for 1-sparse, √n for constant, 0 for all-zero); ``[M, ...] -> [M]``."""
    x = _flat(theta).abs().double()
    # The ratio is scale-invariant; dividing by the max keeps squares from over/underflowing.
    peak = x.amax(dim=1, keepdim=True)
    x = x / torch.where(peak > 0, peak, torch.ones_like(peak))
    l1 = x.sum(dim=1)
    l2 = torch.linalg.vector_norm(x, dim=1)
    # l1 is 0 exactly when l2 is, so the safe denominator yields 0 for an all-zero member.
    return (l1 / torch.where(l2 > 0, l2, torch.ones_like(l2))).to(theta.dtype)
