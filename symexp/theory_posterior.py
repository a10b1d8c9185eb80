r"""Posterior collapse of a linear VAE in closed form (Lucas et al. 2019, arXiv 1911.02469; Wang & Ziyin
2022, arXiv 2205.04009), batched over M (one member per beta).

Model (Lucas et al.'s linear VAE, with a beta-weighted KL and a fixed decoder noise variance eta^2):
data x in R^d with zero mean and covariance S (eigenvalues lambda_1 > ... > lambda_d > 0, eigenvectors
u_i); prior z ~ N(0, I_k); decoder p(x|z) = N(W z, eta^2 I), W in R^{d x k}; encoder q(z|x) = N(V x, D),
V in R^{k x d}, D = diag(D_1..D_k) > 0. The loss is the expected negative beta-ELBO per example,

  L = E_x [ E_q[-log p(x|z)] + beta KL(q(z|x) || p(z)) ]
    = d/2 log(2 pi eta^2) + 1/(2 eta^2) [ tr((I-WV) S (I-WV)^T) + tr(W D W^T) ]
      + beta/2 sum_j [ D_j + (V S V^T)_jj - 1 - log D_j ].

Derivation of the optimum. Write s = beta eta^2 and A = W^T W + s I.
1. For fixed W, L is convex in D and V. dL/dD_j = 0 gives D_j = s / (|w_j|^2 + s); dL/dV = 0 gives
   (W^T W + s I) V S = W^T S, i.e. V = A^{-1} W^T (S invertible).
2. Substituting (using tr(W V S V^T W^T) + s tr(V S V^T) = tr(A^{-1} W^T S W) = tr(W V S)):
     2 eta^2 L = d eta^2 log(2 pi eta^2) + tr S - tr(A^{-1} W^T S W) + s sum_j log(1 + |w_j|^2 / s).
3. By Woodbury, tr S - tr(A^{-1} W^T S W) = s tr(C^{-1} S) with C = W W^T + s I, and log det C =
   d log s + log det(I + W^T W / s). So 2 eta^2 L = s [log det C + tr(C^{-1} S)] + s G(W) + const, where
   the first part is the negative log-likelihood of pPCA with noise variance s (Tipping & Bishop 1999)
   and G(W) = sum_j log(1 + |w_j|^2/s) - log det(I + W^T W/s) >= 0 by Hadamard's inequality, with
   equality iff the columns of W are orthogonal (Lucas et al.: the ELBO is tight exactly then). The
   beta-VAE with noise eta^2 is therefore pPCA with noise beta eta^2 plus a gap that vanishes at pPCA's
   orthogonal-column optimum, so both share the optimum:
     W* = U_k diag(sqrt((lambda_j - s)_+)) P, P a signed permutation (any orthogonal R for pPCA alone).
4. Hence latent j (in order of its eigenvalue) is active, |w_j| > 0, iff j <= k and
     lambda_j > beta * eta^2,
   so the number of active latents is #{j <= k : lambda_j > beta eta^2}. At the optimum, per latent:
   |w_j|^2 = (lambda_j - s)_+, D_j = min(s / lambda_j, 1), Var(encoder mean_j) = (1 - s/lambda_j)_+,
   E_x KL_j = 1/2 log(lambda_j / s)_+, and
     L* = d/2 log(2 pi eta^2) + tr S / (2 eta^2) - 1/(2 eta^2) sum_{active j} [lambda_j - s - s log(lambda_j/s)],
   each bracket > 0 (t - 1 - log t > 0 for t != 1), so switching on a latent with lambda_j > s lowers L.
   At lambda_j = s exactly the latent is off (a tie: both sides give the same loss). This is the
   threshold Dang et al. (arXiv 2306.05023) state for their parametrisation, and with beta = 1 it is
   pPCA's lambda_j > sigma^2. Wang & Ziyin trace the same threshold to the competition between the
   likelihood and the prior's pull on the encoder mean: the rotation/rescaling symmetry between
   encoder and decoder lets the KL switch a whole latent direction off.
"""
from __future__ import annotations

import math

import torch

__all__ = ["linear_vae_loss", "per_latent_kl", "optimum", "active_latents"]


def _spectrum(spectrum, k: int, beta, noise_var: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated (spectrum [d] float64, s = beta * noise_var as [M, 1])."""
    lam = torch.as_tensor(spectrum, dtype=torch.float64).flatten()
    if lam.numel() == 0 or (lam <= 0).any() or (lam[1:] >= lam[:-1]).any():
        raise ValueError(f"spectrum must be strictly decreasing and positive, got {lam.tolist()}")
    if not 1 <= k <= lam.numel():
        raise ValueError(f"k (latents) must be in [1, d={lam.numel()}], got {k}")
    b = torch.as_tensor(beta, dtype=torch.float64).reshape(-1, 1)
    if (b <= 0).any() or noise_var <= 0:
        raise ValueError(f"beta and noise_var must be > 0, got beta={b.flatten().tolist()}, noise_var={noise_var}")
    return lam, b * noise_var


def active_latents(spectrum, k: int, beta, noise_var: float) -> torch.Tensor:
    """#{j <= k : lambda_j > beta * noise_var}; beta a float or ``[M]``; ``-> [M]`` (float64)."""
    lam, s = _spectrum(spectrum, k, beta, noise_var)
    return (lam[:k] > s).sum(dim=1).double()


def optimum(spectrum, k: int, beta, noise_var: float) -> dict[str, torch.Tensor]:
    """The global optimum per member (derivation in the module docstring); beta a float or ``[M]``.

    Returns ``decoder_sq_norms``, ``encoder_var``, ``kl``, ``mean_var`` (each ``[M, k]``, latent j paired
    with lambda_j) and ``loss`` ``[M]``.
    """
    lam, s = _spectrum(spectrum, k, beta, noise_var)
    top = lam[:k].expand(s.shape[0], k)
    active = top > s
    ratio = top / s
    gain = torch.where(active, top - s - s * ratio.log(), torch.zeros_like(top)).sum(dim=1)
    d = lam.numel()
    loss = d / 2 * math.log(2 * math.pi * noise_var) + (lam.sum() - gain) / (2 * noise_var)
    return {
        "decoder_sq_norms": (top - s).clamp(min=0),
        "encoder_var": torch.where(active, s / top, torch.ones_like(top)),
        "kl": torch.where(active, 0.5 * ratio.log(), torch.zeros_like(top)),
        "mean_var": (1 - s / top).clamp(min=0),
        "loss": loss,
    }


def per_latent_kl(V: torch.Tensor, log_var: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """E_x KL(q(z_j|x) || N(0, 1)) = 1/2 [D_j + (V S V^T)_jj - 1 - log D_j]; ``V [M, k, d]`` -> ``[M, k]``."""
    mean_var = torch.einsum("mkd,de,mke->mk", V, cov.to(V), V)
    return 0.5 * (log_var.exp() + mean_var - 1 - log_var)


def linear_vae_loss(W: torch.Tensor, V: torch.Tensor, log_var: torch.Tensor, cov: torch.Tensor,
                    beta, noise_var: float) -> torch.Tensor:
    """Expected negative beta-ELBO per example (module docstring) for data of covariance ``cov [d, d]``.

    ``W [M, d, k]`` decoder, ``V [M, k, d]`` encoder mean, ``log_var [M, k]`` log encoder variances,
    beta a float or ``[M]``; ``-> [M]``. Exact expectation over x, so it can be minimised in float64.
    """
    d = W.shape[1]
    S = cov.to(W)
    residual = torch.eye(d, dtype=W.dtype, device=W.device) - W @ V
    recon = torch.einsum("mij,jk,mik->m", residual, S, residual)
    recon = recon + (W.square() * log_var.exp()[:, None, :]).sum(dim=(1, 2))
    b = torch.as_tensor(beta, dtype=W.dtype, device=W.device).reshape(-1)
    kl = per_latent_kl(V, log_var, S).sum(dim=1)
    return d / 2 * math.log(2 * math.pi * noise_var) + recon / (2 * noise_var) + b * kl
