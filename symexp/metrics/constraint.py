"""How far weights batched over an ensemble axis M are from a linear constraint O^T theta = 0 (paper.md 5)."""
import torch

from symexp.symmetry.dcs import basis

__all__ = ["constraint_norm"]


def constraint_norm(theta: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """|O^T theta|_2 per member, O = `symexp.symmetry.dcs.basis` of one member's size; ``[M, ...] -> [M]``.

    O is the very basis DCS and the penalty baseline use for the same (k, seed), so the metric
    measures the constraint those methods impose."""
    flat = theta.reshape(theta.shape[0], -1)
    return torch.linalg.vector_norm(flat @ basis(flat.shape[1], k, seed, theta.dtype, theta.device), dim=1)
