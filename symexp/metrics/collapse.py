"""Neural-collapse metrics (Papyan, Han & Donoho, PNAS 2020) on penultimate features, batched over M.

Inputs: features ``H [M, N, p]``, integer labels ``y [N]`` (shared by every member) or ``[M, N]`` in
``[0, C)``, every class present in every member; the last layer ``W [M, C, p]``; logits ``[M, N, C]``.
Each metric returns ``[M]`` in float64 (collapse measures are ratios of small numbers).

Definitions, matched to tding1/Neural-Collapse ``validate_NC.py`` (NC1, NC3) and
rhubarbwu/neural-collapse ``neural_collapse/measure.py`` (NC2, NC3):
  mu_c class means, mu_G the sample mean (the mean of the class means on a balanced set),
  Sigma_W = (1/N) sum_i (h_i - mu_{y_i})(h_i - mu_{y_i})^T,  Sigma_B = (1/C) sum_c (mu_c - mu_G)(mu_c - mu_G)^T,
  NC1 = tr(Sigma_W Sigma_B^+) / C, with the pseudo-inverse cutting eigenvalues <= p * eps64 * max
      (numpy/scipy ``pinv``'s default rtol);
  NC2 equinorm = std_c |mu_c - mu_G| / mean_c |mu_c - mu_G| (population std);
      mean cosine of the centred class means over pairs c != c' (-1/(C-1) for a simplex ETF);
      equiangularity = mean_{c != c'} |cos + 1/(C-1)| (Papyan's "max-angle" measure, 0 at an ETF);
      ETF error = | M^T M / |M^T M|_F - (I - 11^T/C)/sqrt(C-1) |_F, M the centred means;
  NC3 = | W M / |W M|_F - (I - 11^T/C)/sqrt(C-1) |_F (tding1's ``compute_W_H_relation``);
  NC4 = fraction of samples whose argmax logit is the class of the nearest class mean (agreement; 1 at
      collapse, where Papyan et al. plot the mismatch 1 - NC4).
"""
from __future__ import annotations

import math

import torch

from .rank import tau_rank

__all__ = [
    "class_means",
    "nc1",
    "equinorm",
    "mean_cosine",
    "equiangularity",
    "etf_error",
    "nc3",
    "nc4_agreement",
    "feature_rank",
]


def _labels(H: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Validated labels broadcast to ``[M, N]`` (one clear error before any work)."""
    if H.dim() != 3:
        raise ValueError(f"features must be [M, N, p], got shape {tuple(H.shape)}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    M, N = H.shape[:2]
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"labels must be an integer tensor, got {y.dtype}")
    if y.shape not in ((N,), (M, N)):
        raise ValueError(f"labels must be [N] or [M, N] with N={N}, M={M}; got {tuple(y.shape)}")
    if y.numel() and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(y.min())}, {int(y.max())}]")
    y = y.to(H.device).expand(M, N)
    counts = torch.nn.functional.one_hot(y, num_classes).sum(dim=1)
    if (counts == 0).any():
        raise ValueError(f"every one of the {num_classes} classes needs at least one sample in every member")
    return y


def _class_stats(H: torch.Tensor, y: torch.Tensor, num_classes: int):
    """(labels ``[M, N]``, class means ``[M, C, p]``, sample mean ``[M, p]``), in float64."""
    y = _labels(H, y, num_classes)
    onehot = torch.nn.functional.one_hot(y, num_classes).double()  # [M, N, C]
    H = H.double()
    means = onehot.transpose(1, 2) @ H / onehot.sum(dim=1)[:, :, None]
    return y, means, H.mean(dim=1)


def class_means(H: torch.Tensor, y: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means ``[M, C, p]`` and the sample mean ``[M, p]``, in float64."""
    _, means, mu_g = _class_stats(H, y, num_classes)
    return means, mu_g


def nc1(H: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """tr(Sigma_W Sigma_B^+) / C; ``[M, N, p] -> [M]``; 0 when every sample sits on its class mean."""
    y, means, mu_g = _class_stats(H, y, num_classes)
    within = H.double() - torch.gather(means, 1, y[:, :, None].expand(-1, -1, means.shape[2]))
    # Sigma_B = B^T B with B = centred means / sqrt(C): its eigenpairs are (s_k^2, v_k) from the SVD
    # of B, so tr(Sigma_W Sigma_B^+) = sum_k |within v_k|^2 / (N s_k^2) without a p x p inverse.
    _, s, vh = torch.linalg.svd((means - mu_g[:, None]) / math.sqrt(num_classes), full_matrices=False)
    eig = s.square()
    keep = eig > H.shape[2] * torch.finfo(torch.float64).eps * eig[:, :1]
    proj = (within @ vh.transpose(1, 2)).square().sum(dim=1)  # [M, C]: N * v_k^T Sigma_W v_k
    inv = torch.where(keep, 1.0 / torch.where(keep, eig, torch.ones_like(eig)), torch.zeros_like(eig))
    return (proj * inv).sum(dim=1) / (H.shape[1] * num_classes)


def _centred_means(H: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    means, mu_g = class_means(H, y, num_classes)
    return means - mu_g[:, None]


def equinorm(H: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Coefficient of variation of |mu_c - mu_G| over classes; ``[M, N, p] -> [M]``; 0 when equinorm."""
    norms = torch.linalg.vector_norm(_centred_means(H, y, num_classes), dim=2)
    mean = norms.mean(dim=1)
    return norms.std(dim=1, correction=0) / torch.where(mean > 0, mean, torch.ones_like(mean))


def _off_diagonal_cosines(H: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Cosines between centred class means for pairs c != c', ``[M, C(C-1)]`` (a zero mean gives 0)."""
    centred = _centred_means(H, y, num_classes)
    norms = torch.linalg.vector_norm(centred, dim=2, keepdim=True)
    unit = centred / torch.where(norms > 0, norms, torch.ones_like(norms))
    cos = unit @ unit.transpose(1, 2)
    off = ~torch.eye(num_classes, dtype=torch.bool, device=cos.device)
    return cos[:, off]


def mean_cosine(H: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean cosine between centred class means, c != c'; ``[M, N, p] -> [M]``; -1/(C-1) at a simplex ETF."""
    return _off_diagonal_cosines(H, y, num_classes).mean(dim=1)


def equiangularity(H: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean |cos + 1/(C-1)| over pairs c != c'; ``[M, N, p] -> [M]``; 0 at a simplex ETF."""
    cos = _off_diagonal_cosines(H, y, num_classes)
    return (cos + 1.0 / (num_classes - 1)).abs().mean(dim=1)


def _structure_error(gram: torch.Tensor) -> torch.Tensor:
    """| G / |G|_F - (I - 11^T/C)/sqrt(C-1) |_F for ``G [M, C, C]``."""
    C = gram.shape[1]
    ideal = (torch.eye(C, dtype=gram.dtype, device=gram.device) - 1.0 / C) / math.sqrt(C - 1)
    norm = torch.linalg.matrix_norm(gram)[:, None, None]
    return torch.linalg.matrix_norm(gram / torch.where(norm > 0, norm, torch.ones_like(norm)) - ideal)


def etf_error(H: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Distance of the centred means' normalised Gram matrix from the simplex ETF's; ``-> [M]``."""
    centred = _centred_means(H, y, num_classes)
    return _structure_error(centred @ centred.transpose(1, 2))


def nc3(H: torch.Tensor, y: torch.Tensor, W: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Self-duality: | W M / |W M|_F - (I - 11^T/C)/sqrt(C-1) |_F, ``W [M, C, p]``; ``-> [M]``; 0 at NC3."""
    if W.shape != (H.shape[0], num_classes, H.shape[2]):
        raise ValueError(f"classifier W must be [M, C, p] = {(H.shape[0], num_classes, H.shape[2])}, "
                         f"got {tuple(W.shape)}")
    centred = _centred_means(H, y, num_classes)
    return _structure_error(W.double() @ centred.transpose(1, 2))


def nc4_agreement(H: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Fraction of samples where argmax logits == nearest class mean (Euclidean); ``-> [M]``."""
    if logits.shape != (*H.shape[:2], num_classes):
        raise ValueError(f"logits must be [M, N, C] = {(*H.shape[:2], num_classes)}, got {tuple(logits.shape)}")
    means, _ = class_means(H, y, num_classes)
    nearest = torch.cdist(H.double(), means, compute_mode="donot_use_mm_for_euclid_dist").argmin(dim=2)
    return (nearest == logits.argmax(dim=2)).double().mean(dim=1)


def feature_rank(H: torch.Tensor, tau: float = 1e-3) -> torch.Tensor:
    """Number of singular values of the mean-centred features above tau * sigma_1; ``[M, N, p] -> [M]``.

    Centred so that fully collapsed features of C classes read C - 1 (the class means span a simplex).
    """
    if H.dim() != 3:
        raise ValueError(f"features must be [M, N, p], got shape {tuple(H.shape)}")
    H = H.double()
    return tau_rank(H - H.mean(dim=1, keepdim=True), tau=tau)
