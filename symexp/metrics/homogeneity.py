"""Unit-homogeneity metrics (stochastic collapse, Chen, Kunin, Yamamura & Ganguli 2023).

A hidden unit i is the vector v_i = [incoming weights, per-unit params, outgoing weights];
``V`` stacks these as ``[M, h, p]`` over an ensemble axis M. Results are ``[M]`` tensors in
the input dtype; arithmetic that needs precision is done in float64.
"""
import torch

AMBIGUOUS = 1e-9  # independent_units: how close to tol a Gram-matrix distance must be to be recomputed

__all__ = [
    "unit_vectors",
    "dead_fraction",
    "independent_units",
    "feature_correlation",
    "near_identical_pairs",
]


def unit_vectors(w_in: torch.Tensor, w_out: torch.Tensor, *extras: torch.Tensor) -> torch.Tensor:
    """Per-unit vectors; w_in ``[M, h, ...]``, w_out ``[M, o, h, ...]``, extras ``[M, h, ...]`` -> ``[M, h, p]``.

    Row i of w_in is unit i's incoming weights; w_out[:, :, i] are its outgoing weights.
    """
    M, h = w_in.shape[:2]
    if w_out.shape[2] != h or any(e.shape[1] != h for e in extras):
        raise ValueError(f"all tensors must have h={h} units (w_out on dim 2, others on dim 1)")
    parts = [w_in.reshape(M, h, -1), *(e.reshape(M, h, -1) for e in extras)]
    parts.append(w_out.movedim(2, 1).reshape(M, h, -1))
    return torch.cat(parts, dim=-1)


def _scaled(V: torch.Tensor) -> torch.Tensor:
    # Every measure here is per-member scale-invariant, so normalise by the member's largest
    # entry in float64 to keep squared norms clear of overflow/underflow.
    V = V.to(torch.float64, copy=True)  # divided in place below: a float64 input must not be touched
    peak = V.abs().flatten(1).amax(dim=1)[:, None, None]
    return V.div_(torch.where(peak > 0, peak, torch.ones_like(peak)))


def _alive(V: torch.Tensor, tau: float) -> torch.Tensor:
    """Mask ``[M, h]`` of units with ‖v_i‖ ≥ tau·max_j‖v_j‖ and ‖v_i‖ > 0 (V already scaled)."""
    norms = torch.linalg.vector_norm(V, dim=-1)
    return (norms >= tau * norms.amax(dim=1, keepdim=True)) & (norms > 0)


def dead_fraction(V: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Fraction of units with ‖v_i‖/max_j‖v_j‖ < tau; ``[M, h, p] -> [M]``; 1.0 for an all-zero member."""
    return (~_alive(_scaled(V), tau)).to(V.dtype).mean(dim=1)


def independent_units(V: torch.Tensor, tol: float = 0.1, dead_tau: float = 0.1) -> torch.Tensor:
    """Number of groups of duplicate live units, 2‖v_i−v_j‖²/(‖v_i‖²+‖v_j‖²) < tol; ``[M, h, p] -> [M]``.

    Dead units (see :func:`dead_fraction`) are dropped; grouping is greedy in unit order.
    """
    Vs = _scaled(V)
    alive = _alive(Vs, dead_tau)
    sq = Vs.square().sum(dim=-1)
    total = sq[:, :, None] + sq[:, None, :]
    denom = torch.where(total > 0, total, torch.ones_like(total))
    # The Gram matrix gives every distance in one matmul, off from the exact differences by float64
    # round-off, at worst ~p * 1e-16 of |v_i|^2 + |v_j|^2 (1e-12 for a ResNet's widest unit): that can
    # decide only a pair within AMBIGUOUS of tol; if there is one, the exact pairwise differences
    # (4-6x slower) decide instead. Exact duplicates stay at rel ~ 0 either way.
    rel = 2 * (total - 2 * (Vs @ Vs.transpose(1, 2))) / denom
    if bool(((rel - tol).abs() < AMBIGUOUS).any()):
        rel = 2 * torch.cdist(Vs, Vs, compute_mode="donot_use_mm_for_euclid_dist").square() / denom
    dup = (rel < tol) & alive[:, :, None] & alive[:, None, :]
    # Greedy pass over units, vectorised over members: when unit i is still ungrouped it is the
    # first such unit, so it opens a group and absorbs its ungrouped duplicates (itself included).
    ungrouped = alive.clone()
    groups = torch.zeros(V.shape[0], dtype=torch.long, device=V.device)
    for i in range(V.shape[1]):
        opens = ungrouped[:, i]
        groups += opens
        ungrouped &= ~(dup[:, i, :] & opens[:, None])
    return groups.to(V.dtype)


def _standardise(F: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm centred columns ``[M, N, h]`` (zero for constant units) and the non-constant mask ``[M, h]``."""
    # Shifting by the first sample makes constant columns exactly zero (mean-centring alone can
    # leave round-off noise that would masquerade as variance) and reduces cancellation.
    # One float64 copy, then in place: at fig1_right's size (tens of MB) every new tensor costs
    # its page faults, and in place the same operations run in half the time.
    Fc = F.to(torch.float64, copy=True)
    Fc.sub_(Fc[:, :1].clone())
    varying = (Fc != 0).any(dim=1)
    Fc.sub_(Fc.mean(dim=1, keepdim=True))
    peak = Fc.abs().amax(dim=1, keepdim=True)
    Fc.div_(torch.where(peak > 0, peak, torch.ones_like(peak)))
    norm = torch.linalg.vector_norm(Fc, dim=1, keepdim=True)
    return Fc.div_(torch.where(norm > 0, norm, torch.ones_like(norm))), varying


def feature_correlation(F: torch.Tensor) -> torch.Tensor:
    """Pearson correlation between units; ``[M, N, h] -> [M, h, h]``; rows/cols of constant units are 0."""
    Z, _ = _standardise(F)
    return (Z.transpose(1, 2) @ Z).clamp(-1.0, 1.0).to(F.dtype)


def near_identical_pairs(F: torch.Tensor, thresh: float = 0.99) -> torch.Tensor:
    """Fraction of pairs i<j of non-constant units with |corr| > thresh; ``[M, N, h] -> [M]``; 0 if < 2 such units."""
    Z, varying = _standardise(F)
    corr = (Z.transpose(1, 2) @ Z).abs()
    h = F.shape[2]
    upper = torch.ones(h, h, dtype=torch.bool, device=F.device).triu(diagonal=1)
    pairs = upper & varying[:, :, None] & varying[:, None, :]
    hits = ((corr > thresh) & pairs).sum(dim=(1, 2))
    total = pairs.sum(dim=(1, 2))
    return (hits / total.clamp(min=1)).to(F.dtype)
