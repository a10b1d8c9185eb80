"""Rank metrics for weight matrices batched over an ensemble axis M.

``W`` is ``[M, m, n]``; conv-like ``[M, out, ...]`` tensors are read as ``[M, out, prod(rest)]``
(see :func:`as_matrix`). Singular values are computed in the input dtype; the arithmetic on
them is done in float64 and results are returned in the input dtype. A zero matrix gets 0
for every rank measure (exactly-zero matrices occur in practice, so this must not be NaN).

Every measure but the raw spectrum takes `atol` (default 0: off): singular values <= atol count as
exactly zero, so a matrix with sigma_1 <= atol is the zero matrix (rank 0). Relative measures are
blind to scale: a weight that weight decay drove to ~1e-13 but not yet to float zero has a flat noise
spectrum and reads as high rank, and `atol` says at which size a direction stops mattering.

Every measure also takes `sv`, the matrix's `singular_values(W)` when the caller has them already
(symexp.evaluation.weights.measure computes them once per tensor for all its rank measures).
"""
import torch

__all__ = [
    "as_matrix",
    "singular_values",
    "tau_rank",
    "erank",
    "stable_rank",
    "energy_rank",
    "normalised_spectrum",
]


def as_matrix(W: torch.Tensor) -> torch.Tensor:
    """Reshape ``[M, out, ...]`` to ``[M, out, prod(rest)]`` (identity on ``[M, m, n]``)."""
    return W.reshape(W.shape[0], W.shape[1], -1)


def singular_values(W: torch.Tensor) -> torch.Tensor:
    """Singular values in descending order; ``[M, m, n] -> [M, min(m, n)]``."""
    return torch.linalg.svdvals(as_matrix(W))


def _spectrum(W: torch.Tensor, sv: torch.Tensor | None) -> torch.Tensor:
    return singular_values(W) if sv is None else sv


def _relative_spectrum(W: torch.Tensor, atol: float = 0.0,
                       sv: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (σ/σ₁ in float64, mask of non-zero members); σ/σ₁ is all-zero for a zero matrix."""
    s = _spectrum(W, sv).double()
    s = torch.where(s > atol, s, torch.zeros_like(s))
    s1 = s[:, :1]
    nonzero = s1[:, 0] > 0
    # Working relative to σ₁ keeps squares and sums clear of overflow for any finite input.
    return s / torch.where(s1 > 0, s1, torch.ones_like(s1)), nonzero


def tau_rank(W: torch.Tensor, tau: float = 1e-3, atol: float = 0.0, sv: torch.Tensor | None = None) -> torch.Tensor:
    """Number of σ_i > max(tau·σ₁, atol); ``[M, m, n] -> [M]``; 0 for a zero matrix."""
    s = _spectrum(W, sv)
    return (s > (tau * s[:, :1]).clamp(min=atol)).sum(dim=1).to(s.dtype)


def erank(W: torch.Tensor, atol: float = 0.0, sv: torch.Tensor | None = None) -> torch.Tensor:
    """Roy–Vetterli effective rank exp(H(p)), p = σ/Σσ, 0·log0 = 0; ``[M, m, n] -> [M]``; 0 for a zero matrix."""
    r, nonzero = _relative_spectrum(W, atol, sv)
    total = r.sum(dim=1, keepdim=True)
    p = r / torch.where(total > 0, total, torch.ones_like(total))
    entropy = -torch.special.xlogy(p, p).sum(dim=1)
    out = torch.where(nonzero, entropy.exp(), torch.zeros_like(entropy))
    return out.to(W.dtype)


def stable_rank(W: torch.Tensor, atol: float = 0.0, sv: torch.Tensor | None = None) -> torch.Tensor:
    """‖W‖²_F / ‖W‖²₂ = Σσ_i²/σ₁²; ``[M, m, n] -> [M]``; 0 for a zero matrix."""
    r, _ = _relative_spectrum(W, atol, sv)
    return r.square().sum(dim=1).to(W.dtype)


def energy_rank(W: torch.Tensor, energy: float = 0.99, atol: float = 0.0,
                sv: torch.Tensor | None = None) -> torch.Tensor:
    """Smallest k with Σ_{i≤k} σ_i² ≥ energy·Σσ_i²; ``[M, m, n] -> [M]``; 0 for a zero matrix."""
    r, nonzero = _relative_spectrum(W, atol, sv)
    e = r.square()
    frac = e.cumsum(dim=1) / torch.where(nonzero, e.sum(dim=1), torch.ones_like(e[:, 0]))[:, None]
    # Slack absorbs SVD error in the input dtype and float64 cumsum round-off, so that e.g. a
    # rank-k matrix with equal σ at energy=1.0 reports k rather than tripping on a 1e-16 deficit.
    n = r.shape[1]
    slack = 4 * torch.finfo(W.dtype).eps + n * torch.finfo(torch.float64).eps
    k = ((frac < energy - slack).sum(dim=1) + 1).clamp(max=n)
    return torch.where(nonzero, k, torch.zeros_like(k)).to(W.dtype)


def normalised_spectrum(W: torch.Tensor) -> torch.Tensor:
    """σ/σ₁; ``[M, m, n] -> [M, min(m, n)]``; all zeros for a zero matrix."""
    r, _ = _relative_spectrum(W)
    return r.to(W.dtype)
