"""What the collapse experiments measure at every evaluation (issue 17), beside symexp.train.evaluate.

* streams (symexp.data.streams): the online loss of the window, the error on the probe set or the
  accuracy on the test set as the last trained task sees it, and per hidden layer: dead units and
  feature effective rank on the probe set (as loss-of-plasticity computes them), mean |W| per layer,
  and, apart from dead units, the units on a mirror plane: the zero plane (the whole unit vector
  in, bias, out <= tau x the layer's mean unit norm at init) and duplicates (the permutation plane);
* a balanced image set (symexp.data.collapse_sets.BalancedData): NC1-NC4 and the centred feature rank
  of the penultimate features of the training set, and the training accuracy;
* Gaussian samples of known spectrum (SpectrumData) with a bank of linear VAEs: per beta, the latents
  whose expected KL exceeds ACTIVE_KL, the closed-form count (symexp.theory_posterior) and the loss gap
  to the closed-form optimum.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from symexp import theory_posterior
from symexp.data.collapse_sets import BalancedData, SpectrumData
from symexp.data.streams import StreamData
from symexp.ensemble import Ensemble, State, evaluating
from symexp.metrics import collapse, names, plasticity

ZERO_PLANE_TAUS = (1e-3, 0.1)  # on the plane (numerically) | near it (a tenth of the init's unit norm)
FEATURE_RANK_TAU = 1e-3
ACTIVE_KL = 0.01  # nats; the smallest active closed-form KL of the posterior protocol is ~0.17


def member_forward(ens: Ensemble, state: State, x: torch.Tensor, per_member: bool, **kwargs):
    """Eval-mode outputs of every member on x ([N, ...] shared, or [M, N, ...] with per_member)."""
    def one(raw, fixed, buffers, x):
        return functional_call(ens.model, {**ens.effective(raw, fixed), **buffers}, (x,), kwargs)
    fn = vmap(one, in_dims=(0, 0, 0, 0 if per_member else None))
    with torch.no_grad(), evaluating(ens.model):
        return fn(state.raw, ens.fixed, state.buffers, x)


def extra_results(ens: Ensemble, state: State, data) -> list:
    """The collapse measures a fixed data set calls for by its type (none for the others)."""
    if isinstance(data, BalancedData):
        return neural_collapse_results(ens, state, data)
    if isinstance(data, SpectrumData):
        return posterior_results(ens, state, data)
    return []


def stream_results(ens: Ensemble, state: State, data: StreamData, batcher, mcfg: dict) -> list:
    """The online loss of the window, the test or probe error, and the hidden units on the probe set."""
    out = []
    online = batcher.take_online()
    if online is not None:
        out.append(("", names.LOSS_ONLINE, online))
    test = batcher.stream.test()
    if test is not None:  # the test set under the permutation of the task just trained
        logits = member_forward(ens, state, test[0], per_member=True)
        y = test[1].expand(logits.shape[0], -1)
        out.append(("", names.LOSS_TEST, F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
                    .view(y.shape).mean(1)))
        out.append(("", names.ACC_TEST, (logits.argmax(-1) == y).double().mean(1)))
    px, py = batcher.stream.probe()
    pred, acts = member_forward(ens, state, px, per_member=batcher.stream.per_member_probe, hidden=True)
    if data.task == "regression":
        out.append(("", names.LOSS_PROBE, (pred - py).pow(2).mean(1)))
    return out + hidden_unit_results(ens, state, acts, mcfg)


def hidden_unit_results(ens: Ensemble, state: State, acts: list[torch.Tensor], mcfg: dict) -> list:
    """Per hidden layer: dead units and effective rank of its probe features, mirror-plane counts; and
    mean |W| of every weight matrix."""
    theta = ens.effective(state.raw, ens.fixed)
    layers = list(ens.model.probes)
    views = ens.model.probe_views(theta) if hasattr(ens.model, "probe_views") else {}
    init_views = ens.model.probe_views(ens.effective(ens.raw0, ens.fixed)) if views else {}
    out = []
    for layer, act in zip(layers, acts):
        out += [(layer, names.DEAD_UNITS, plasticity.dead_units(act)),
                (layer, names.FEATURE_ERANK, plasticity.feature_effective_rank(act))]
        if layer in views:
            scale = torch.linalg.vector_norm(init_views[layer].double(), dim=-1).mean(1)  # [M]
            out += [(layer, names.zero_plane(tau), plasticity.zero_plane_count(views[layer], tau, scale))
                    for tau in ZERO_PLANE_TAUS]
            out.append((layer, names.duplicates(mcfg["unit_tol"]),
                        plasticity.duplicate_count(views[layer], mcfg["unit_tol"], mcfg["dead_tau"])))
    out += [(k, names.WEIGHT_MAGNITUDE, plasticity.weight_magnitude(w, "mean"))
            for k, w in theta.items() if k.endswith("weight") and w.dim() >= 3]
    return out


def neural_collapse_results(ens: Ensemble, state: State, data: BalancedData) -> list:
    """NC1-NC4 and the feature rank of the penultimate features of the whole training set."""
    logits, feats = ens.outputs(state.raw, data.x, state.buffers)
    y, C = data.y, len(data.classes)
    out = [("", names.ACC_TRAIN, (logits.argmax(-1) == y).double().mean(1))]
    pen = "penultimate"
    out += [(pen, names.NC1, collapse.nc1(feats, y, C)), (pen, names.EQUINORM, collapse.equinorm(feats, y, C)),
            (pen, names.MEAN_COS, collapse.mean_cosine(feats, y, C)),
            (pen, names.EQUIANGULARITY, collapse.equiangularity(feats, y, C)),
            (pen, names.ETF_ERROR, collapse.etf_error(feats, y, C)),
            (pen, names.NC4, collapse.nc4_agreement(feats, y, logits, C)),
            (pen, names.feature_rank(FEATURE_RANK_TAU), collapse.feature_rank(feats, FEATURE_RANK_TAU))]
    if hasattr(ens.model, "classifier"):
        W = ens.model.classifier(ens.effective(state.raw, ens.fixed))
        out.append((pen, names.NC3, collapse.nc3(feats, y, W, C)))
    return out


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
