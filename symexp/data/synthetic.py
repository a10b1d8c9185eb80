"""Synthetic data with known answers: teacher-student linear regression (Figure 1, left) and a
linear map with a known spectrum (Figure 1, middle)."""
from __future__ import annotations

import torch

from symexp.data import TensorData


def regression(cfg: dict, device: torch.device, dtype: torch.dtype) -> TensorData:
    """y = x . w* + noise, x ~ N(0, I_d); w* has `nonzero` N(0,1) coordinates (sparse) or all d (dense).

    Drawn in float64 on the CPU from `cfg["seed"]`, so every device and dtype sees the same numbers.
    """
    g = torch.Generator().manual_seed(cfg["seed"])
    n, d = cfg["n_train"], cfg["dim"]
    teacher = torch.randn(d, generator=g, dtype=torch.float64)
    if cfg["teacher"] == "sparse":
        mask = torch.zeros(d, dtype=torch.float64)
        mask[torch.randperm(d, generator=g)[: cfg["nonzero"]]] = 1.0
        teacher = teacher * mask
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = x @ teacher + cfg["noise"] * torch.randn(n, generator=g, dtype=torch.float64)
    return TensorData(
        x=x.to(device, dtype), y=y.to(device, dtype), task="regression",
        extras={"teacher": teacher, "x64": x, "y64": y},
    )


def lowrank_map(cfg: dict, device: torch.device, dtype: torch.dtype) -> TensorData:
    """y = M x + noise, M = P diag(s) Q^T with random orthogonal P, Q; x, y: [n, d].

    s_i = top * decay^i (spectrum=decay), or the same with s_i = 0 for i >= rank (spectrum=rank).
    The sample is whitened exactly (X^T X / n = I, by orthogonalising a Gaussian sample), so the
    least-squares map is M_hat = Y^T X / n (= M when noise = 0) and the loss depends on W only
    through |W - M_hat|_F.

    Loss normalisation: x and y are both stored times sqrt(d). The map W is unchanged, and the
    engine's MSE (a mean over all n * d elements) becomes (1/n) sum_i |y_i - W x_i|^2, the squared
    error summed over outputs, = |W - M_hat|_F^2 + const. With L2 gamma on (U, V) the minimiser is
    then sigma_i(U V) = (sigma_i(M_hat) - gamma)_+ exactly (symexp.theory.spectrum_reference).
    Without the sqrt(d) the same MSE is |W - M_hat|^2 / d and the threshold would be d * gamma.
    """
    g = torch.Generator().manual_seed(cfg["seed"])
    n, d = cfg["n_train"], cfg["dim"]
    s = cfg["top"] * cfg["decay"] ** torch.arange(d, dtype=torch.float64)
    if cfg["spectrum"] == "rank":
        s[cfg["rank"]:] = 0.0
    p, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    m = p @ torch.diag(s) @ q.T
    x = torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))[0] * n ** 0.5
    y = x @ m.T + cfg["noise"] * torch.randn(n, d, generator=g, dtype=torch.float64)
    m_hat = y.T @ x / n
    x, y = x * d ** 0.5, y * d ** 0.5
    return TensorData(
        x=x.to(device, dtype), y=y.to(device, dtype), task="regression",
        extras={"teacher": m, "teacher_sv": s, "target": m_hat, "target_sv": torch.linalg.svdvals(m_hat),
                "x64": x, "y64": y},
    )
