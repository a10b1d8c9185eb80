"""Data of the collapse experiments (issue 17): a balanced image subset for neural collapse, and
Gaussian samples with a known covariance spectrum for posterior collapse.

Each returns a TensorData subclass: its type tells the evaluation what to measure beyond the usual
(symexp.evaluation): NC1-NC4 on the training features, or the active latents of a linear VAE
against the closed form (symexp.theory_posterior).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal, Optional

import torch
import torch.nn.functional as F

from symexp.components import DataSet
from symexp.data import TensorData
from symexp.errors import ConfigError
from symexp.schema import Count, Positive, Range


@dataclass
class BalancedData(TensorData):
    """A classification set whose training features are measured for neural collapse."""


@dataclass
class SpectrumData(TensorData):
    """Zero-mean samples whose sample covariance is exactly `cov` = U diag(spectrum) U^T (float64, CPU)."""

    spectrum: Optional[torch.Tensor] = None  # [d], strictly decreasing
    cov: Optional[torch.Tensor] = None  # [d, d]


@dataclass
class BalancedImages(DataSet):
    """The first `per_class` training images of every class (Fashion-MNIST), average-pooled by `pool`."""

    name: Literal["balanced_fashion_mnist"] = "balanced_fashion_mnist"
    root: Optional[str] = None  # null = /usr/share/datasets/fashion-mnist
    per_class: Count = 80
    pool: Count = 2  # 2: 14 x 14
    n_test: Optional[Count] = 2000  # the first n test images (null = all)
    kind = "images"
    task = "classification"

    def check(self, parts, c: dict) -> None:
        if 28 % self.pool:
            raise ConfigError(f"data.pool: {self.pool} is not allowed; expected a divisor of 28 (1, 2, 4, 7, 14, 28)")

    def build(self, device: torch.device, dtype: torch.dtype) -> BalancedData:
        from symexp.data.images import load_images

        raw = load_images("fashion_mnist", self.root)
        picked = torch.cat([torch.nonzero(raw.y_train == c)[:self.per_class, 0] for c in range(len(raw.classes))])
        if len(picked) < self.per_class * len(raw.classes):
            raise ConfigError(f"data.per_class: {self.per_class} is more than the smallest class holds")
        picked = picked.sort().values  # the data set's own order, classes interleaved
        raw.x_train, raw.y_train = raw.x_train[picked].clone(), raw.y_train[picked].clone()
        imgs = raw.subset(None, self.n_test).to(device, dtype)
        x, x_test = (F.avg_pool2d(t, self.pool) if self.pool > 1 else t for t in (imgs.x_train, imgs.x_test))
        return BalancedData(x=x, y=imgs.y_train, task="classification", x_test=x_test, y_test=imgs.y_test,
                            classes=tuple(raw.classes), source=f"{raw.name}, {self.per_class} per class")


@dataclass
class GaussianSpectrum(DataSet):
    """n samples in R^dim with mean exactly 0 and sample covariance exactly U diag(lambda) U^T,
    lambda_i = top * ratio^(i-1), U a random rotation: the closed form is exact for the trained loss."""

    name: Literal["gaussian_spectrum"] = "gaussian_spectrum"
    n_train: Count = 4096
    dim: Count = 16
    top: Positive = 4.0  # lambda_1
    ratio: Annotated[float, Range(0, 1, lo_open=True, hi_open=True)] = 0.5  # lambda_{i+1} / lambda_i
    seed: int = 0  # data seed, shared by all members
    kind = "samples"  # unlabelled vectors: only a model of its own objective reads them
    task = "objective"

    def check(self, parts, c: dict) -> None:
        if self.n_train <= self.dim:
            raise ConfigError(f"data.n_train: {self.n_train} is not allowed; expected > data.dim ({self.dim})")

    def build(self, device: torch.device, dtype: torch.dtype) -> SpectrumData:
        g = torch.Generator().manual_seed(self.seed)
        n, d = self.n_train, self.dim
        lam = self.top * self.ratio ** torch.arange(d, dtype=torch.float64)
        u, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        z = torch.randn(n, d, generator=g, dtype=torch.float64)
        q, _ = torch.linalg.qr(z - z.mean(0))  # orthonormal columns, each orthogonal to the ones vector
        x = n ** 0.5 * q * lam.sqrt() @ u.T  # x^T x / n = U diag(lam) U^T, column means 0
        return SpectrumData(x=x.to(device, dtype), y=torch.zeros(n, device=device, dtype=dtype), task="objective",
                            spectrum=lam, cov=x.T @ x / n, source=f"Gaussian, spectrum {self.top:g} x {self.ratio:g}^i")
