"""A bank of linear VAEs, one per beta (posterior collapse, issue 17; closed form: symexp.theory_posterior).

Block b is Lucas et al.'s linear VAE with a beta_b-weighted KL and a fixed decoder noise variance eta^2:
decoder W_b [d, k], encoder mean V_b [k, d], encoder log-variances log D_b [k]. The forward pass
returns the sum over blocks of each block's expected negative beta-ELBO on the batch (exact over the
encoder noise, an average over the batch: `linear_vae_loss` on x^T x / n). The blocks share no
parameter, so the gradient of the sum with respect to block b is block b's own gradient: the beta
sweep is one axis of every ensemble member, and seeds x weight decays stay the member axis.

Parameters are stored so that each row is one unit's fan-in, which is what breaking=syre's default
scale reads (0.01 / sqrt(fan-in)): `weight` [B*d, k] (the decoder; fan-in k), `encoder` [B*k, d]
(fan-in d), `log_var` [B*k]. The data must have mean 0 (the model has no biases).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from symexp.components import Model
from symexp.errors import ConfigError
from symexp.schema import Count, Positive
from symexp.theory_posterior import linear_vae_loss


@dataclass
class LinearVAEConfig(Model):
    name: Literal["linear_vae"] = "linear_vae"
    latents: Count = 8  # k
    betas: list[Positive] = field(default_factory=lambda: [1.0])  # one VAE per beta
    noise_var: Positive = 1.0  # eta^2, the decoder's fixed noise variance
    init_scale: Positive = 0.1  # std of the decoder and encoder entries at init (log D starts at 0)
    reads = ("samples",)

    def check(self, parts, c: dict) -> None:
        dim = getattr(parts.data, "dim", None)
        if dim is not None and self.latents > dim:
            raise ConfigError(f"model.latents: {self.latents} is not allowed; expected 1..data.dim ({dim})")
        if len(set(self.betas)) != len(self.betas) or not self.betas:
            raise ConfigError(f"model.betas: {self.betas}; expected distinct values, at least one")

    def build(self, data) -> nn.Module:
        return LinearVAE(data.x.shape[1], self.latents, self.betas, self.noise_var, self.init_scale)


class LinearVAE(nn.Module):
    probes: dict = {}  # no weight structure measured: symexp.evaluation.posterior_collapse reads the blocks

    def __init__(self, dim: int, latents: int, betas: list[float], noise_var: float, init_scale: float):
        super().__init__()
        self.dim, self.latents, self.betas = dim, latents, [float(b) for b in betas]
        self.noise_var, self.init_scale = noise_var, init_scale
        n = len(self.betas)
        self.weight = nn.Parameter(torch.empty(n * dim, latents))
        self.encoder = nn.Parameter(torch.empty(n * latents, dim))
        self.log_var = nn.Parameter(torch.empty(n * latents))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=self.init_scale)
        nn.init.normal_(self.encoder, std=self.init_scale)
        nn.init.zeros_(self.log_var)

    def blocks(self, weight: torch.Tensor, encoder: torch.Tensor, log_var: torch.Tensor):
        """(W [..., B, d, k], V [..., B, k, d], log D [..., B, k]) from stored tensors (with or without [M])."""
        lead, n, d, k = weight.shape[:-2], len(self.betas), self.dim, self.latents
        return (weight.reshape(*lead, n, d, k), encoder.reshape(*lead, n, k, d), log_var.reshape(*lead, n, k))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over the beta blocks of the expected negative beta-ELBO per example of batch x [N, d]."""
        cov = x.T @ x / x.shape[0]
        W, V, log_var = self.blocks(self.weight, self.encoder, self.log_var)
        return linear_vae_loss(W, V, log_var, cov, self.betas, self.noise_var).sum()
