"""Synthetic data with known answers: teacher-student linear regression (Figure 1, left) and a
linear map with a known spectrum (Figure 1, middle)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Literal

import torch

from symexp.components import DataSet
from symexp.data import TensorData, Truth
from symexp.errors import ConfigError
from symexp.schema import Count, NonNeg, Positive, Range


@dataclass
class Regression(DataSet):
    """Linear regression y = x . w_teacher + noise (Figure 1, left)."""

    name: Literal["regression"] = "regression"
    n_train: Count = 1000  # samples
    dim: Count = 100  # input dimension d
    teacher: Literal["sparse", "dense"] = "sparse"
    nonzero: Count = 10  # nonzero teacher coordinates (teacher=sparse)
    noise: NonNeg = 0.5  # std of the fixed label noise of the data set
    seed: int = 0  # data seed, shared by all members
    kind = "vector"

    def check(self, parts, c: dict) -> None:
        if self.teacher == "sparse" and self.nonzero > self.dim:
            raise ConfigError(f"data.nonzero: {self.nonzero} is not allowed; expected 1..data.dim ({self.dim})")

    def build(self, device: torch.device, dtype: torch.dtype) -> TensorData:
        return regression(asdict(self), device, dtype)


@dataclass
class LowRankMap(DataSet):
    """y = M x + noise with a known spectrum (Figure 1, middle)."""

    name: Literal["lowrank_map"] = "lowrank_map"
    n_train: Count = 1000  # samples (>= dim: the sample is whitened exactly)
    dim: Count = 20  # input = output dimension d
    spectrum: Literal["decay", "rank"] = "decay"  # s_i = top * decay^i, or that cut to 0 beyond `rank`
    top: Positive = 2.0  # largest singular value of M
    decay: Annotated[float, Range(0, 1, lo_open=True)] = 0.7  # ratio of consecutive singular values
    rank: Count = 5  # rank of M (spectrum=rank)
    noise: NonNeg = 0.0  # std of the fixed label noise of the data set
    seed: int = 0  # data seed, shared by all members
    kind = "matrix"

    def check(self, parts, c: dict) -> None:
        if self.n_train < self.dim:
            raise ConfigError(f"data.n_train: {self.n_train} is not allowed; expected >= data.dim ({self.dim})")
        if self.spectrum == "rank" and self.rank > self.dim:
            raise ConfigError(f"data.rank: {self.rank} is not allowed; expected 1..data.dim ({self.dim})")

    def build(self, device: torch.device, dtype: torch.dtype) -> TensorData:
        return lowrank_map(asdict(self), device, dtype)


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
        truth=Truth(x64=x, y64=y, teacher=teacher),
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
        truth=Truth(x64=x, y64=y, teacher=m, teacher_sv=s, target=m_hat, target_sv=torch.linalg.svdvals(m_hat)),
    )
