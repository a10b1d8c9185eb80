"""What is measured on Gaussian samples of known spectrum (symexp.data.collapse_sets.SpectrumData) with
a bank of linear VAEs: per beta, the latents whose expected KL exceeds ACTIVE_KL, the closed-form count
(symexp.theory_posterior) and the loss gap to the closed-form optimum -- posterior collapse against
its exact threshold, read off the blocks of the bank rather than off probed weights."""
from __future__ import annotations

import torch

from symexp import theory_posterior
from symexp.data.collapse_sets import SpectrumData
from symexp.ensemble import Ensemble, State
from symexp.metrics import names

ACTIVE_KL = 0.01  # nats; the smallest active closed-form KL of the posterior protocol is ~0.17


def posterior_results(ens: Ensemble, state: State, data: SpectrumData) -> list:
    """Per beta block: measured and closed-form active latents, and the loss above the optimum."""
    model, theta = ens.model, ens.effective(state.raw, ens.fixed)
    W, V, log_var = (t.detach().double() for t in model.blocks(theta["weight"], theta["encoder"], theta["log_var"]))
    M, B, k = log_var.shape
    cov, lam, betas = data.cov.to(W.device), data.spectrum, torch.tensor(model.betas, dtype=torch.float64)
    kl = theory_posterior.per_latent_kl(V.flatten(0, 1), log_var.flatten(0, 1), cov).view(M, B, k)
    active = (kl > ACTIVE_KL).sum(-1).double()
    loss = theory_posterior.linear_vae_loss(W.flatten(0, 1), V.flatten(0, 1), log_var.flatten(0, 1), cov,
                                            betas.repeat(M), model.noise_var).view(M, B)
    best = theory_posterior.optimum(lam, k, betas, model.noise_var)["loss"].to(loss.device)
    ref = theory_posterior.active_latents(lam, k, betas, model.noise_var)
    out = []
    for b, beta in enumerate(model.betas):
        layer = names.beta_layer(beta)
        out += [(layer, names.active_latents(ACTIVE_KL), active[:, b]),
                (layer, names.ref_active_latents(ACTIVE_KL), ref[b].expand(M)),
                (layer, names.POSTERIOR_LOSS_GAP, loss[:, b] - best[b])]
    return out
