"""The structure of the weights, measured at every evaluation for every kind of data: on each probed
tensor (a model's own probes, the symmetry's `structure` on every effective weight, and
`metrics.families` on all of them) the sparsity, ranks, units, norm, spectrum and the distance to a
target constraint O^T theta = 0 -- the structure the paper says weight decay and a symmetry induce."""
from __future__ import annotations

import torch

from symexp import metrics
from symexp.ensemble import Ensemble
from symexp.metrics import names
from symexp.metrics.constraint import constraint_norm


def measure(theta: torch.Tensor, families: tuple[str, ...], mcfg: dict) -> dict[str, torch.Tensor]:
    """Structure metrics of one probed tensor `[M, ...]` -> {metric name: [M]}."""
    out = {}
    matrix = theta.dim() >= 3  # a matrix per member: rank families apply
    if "sparsity" in families:
        for tau in mcfg["sparsity_tau"]:
            out[names.frac_zero(tau)] = metrics.frac_zero(theta, tau)
        out[names.L1_L2] = metrics.l1_l2_ratio(theta)
    # one SVD per tensor for every rank measure and the spectrum
    sv = metrics.singular_values(theta) if matrix and {"rank", "spectrum"} & set(families) else None
    if "rank" in families and matrix:
        # relative ranks always; with rank_atol > 0 also the floored ones (singular values <= atol
        # count as zero) under names that say so, so a table never hides which one a number is
        atol = mcfg.get("rank_atol", 0.0)
        for a in (0.0, atol) if atol > 0 else (0.0,):
            out[names.tau_rank(mcfg["rank_tau"], a)] = metrics.tau_rank(theta, mcfg["rank_tau"], a, sv=sv)
            out[names.erank(a)] = metrics.erank(theta, a, sv=sv)
            out[names.stable_rank(a)] = metrics.stable_rank(theta, a, sv=sv)
            out[names.energy_rank(mcfg["energy"], a)] = metrics.energy_rank(theta, mcfg["energy"], a, sv=sv)
    if "units" in families and matrix:  # theta: per-unit vectors [M, h, p] from a model's probe_views (anchors A1)
        out[names.INDEPENDENT_UNITS] = metrics.independent_units(theta, mcfg["unit_tol"], mcfg["dead_tau"])
        out[names.DEAD_FRAC] = metrics.dead_fraction(theta, mcfg["dead_tau"])
    if "norm" in families:  # Euclidean (Frobenius) norm of the whole tensor: exact zeros stay 0
        out[names.NORM] = torch.linalg.vector_norm(theta.reshape(theta.shape[0], -1), dim=1)
    if "spectrum" in families and matrix:  # every singular value, largest first
        for i, sigma in enumerate(sv.unbind(1)):
            out[names.singular_value(i)] = sigma
    if mcfg["constraint"]["k"]:  # a target O^T theta = 0 is set: measured on every probe
        out[names.CONSTRAINT] = constraint_norm(theta, **mcfg["constraint"])
    return out


def probe_plan(ens: Ensemble, mcfg: dict) -> dict[str, tuple[str, ...]]:
    """{probed tensor: metric families}: the model's own probes, the symmetry's structure on every
    effective weight, and `metrics.families` on all of them."""
    plan = {layer: list(fams) for layer, fams in ens.model.probes.items()}
    for name in ens.groups:
        plan.setdefault(name, []).extend(getattr(ens.symmetry, "structure", ()))
    for fams in plan.values():
        fams.extend(mcfg["families"])
    return {layer: tuple(dict.fromkeys(fams)) for layer, fams in plan.items() if fams}
