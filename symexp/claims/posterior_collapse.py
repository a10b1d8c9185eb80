"""PC (paper.md 6, posterior collapse): the rotation/rescaling symmetry between encoder and decoder, with
the KL (or weight decay) as gamma, switches latent directions off at a threshold. For the linear VAE the
threshold is exact: latent j is active iff lambda_j > beta eta^2 (symexp.theory_posterior; Lucas et al.).

Cells are (member, beta) at the last step: a latent is active when its expected KL exceeds
evaluation.posterior_collapse.ACTIVE_KL. PC1 compares with the closed form, which is theory, not a tuned threshold;
removing the symmetry (syre) is a negative control: it must not revive a latent whose collapse is the
optimum. Disclosure: the plain job (breaking=none) ran twice while the protocol was calibrated, before
these checks were written: at 3000 steps one cell of 27 at the smallest beta had not yet switched its
last latent on (loss gap 1.1e-3), so the run length became 6000 steps; that 6000-step run already showed
what PC3 states, so PC3 is marked as set after seeing it. The other thresholds are theory (0 cells).

Premises (issue 23): the plain arm at wd 0 shows posterior collapse (some cell has a latent switched off, PC0)
and has converged (PC1/converged, the comparison with the optimum presumes it); every other row rests on
both. PC3's weight decay acts through Adam, whose coupled L2 has no single rate (eta_eff * wd * T is not
defined: the report's decay table says so), so PC3 stays informational.
"""
from __future__ import annotations

import pandas as pd

from symexp.claims import Check, final, has, select
from symexp.evaluation.posterior_collapse import ACTIVE_KL
from symexp.metrics import names

EXPERIMENT = "posterior_collapse"
ACTIVE, PREDICTED = names.active_latents(ACTIVE_KL), names.ref_active_latents(ACTIVE_KL)
LATENTS = 8  # configs/experiment/posterior_collapse.yaml model.latents
GAP = 1e-4  # converged: loss within this of the closed-form optimum (nats per example)
FIXED = " [threshold fixed before the first full run]"


def cells(table: pd.DataFrame, breaking: str, wd: float | None = None) -> pd.DataFrame:
    """One row per (member, beta) at the last step: measured and predicted counts, beta, loss gap."""
    t = final(table[table.experiment == EXPERIMENT])
    t = t[t.breaking == breaking] if wd is None else t[(t.breaking == breaking) & (t.weight_decay == wd)]
    for metric in (ACTIVE, PREDICTED, names.POSTERIOR_LOSS_GAP):
        select(t, EXPERIMENT, metric)
    c = t[t.metric.isin([ACTIVE, PREDICTED, names.POSTERIOR_LOSS_GAP])].pivot_table(
        index=["job", "member", "seed", "weight_decay", "layer"], columns="metric", values="value").reset_index()
    c["beta"] = c.layer.map(names.layer_beta)
    return c


def mismatches(table: pd.DataFrame, breaking: str, wd: float) -> float:
    c = cells(table, breaking, wd)
    return float((c[ACTIVE] != c[PREDICTED]).sum())


def revived(table: pd.DataFrame, breaking: str) -> float:
    """Cells with more active latents than the optimum has, over every weight decay."""
    c = cells(table, breaking)
    return float((c[ACTIVE] > c[PREDICTED]).sum())


def extra_collapse(table: pd.DataFrame, wd: float) -> float:
    c = cells(table, "none", wd)
    return float((c[ACTIVE] < c[PREDICTED]).sum())


def collapsed_cells(table: pd.DataFrame) -> float:
    """Plain, wd 0: cells with at least one latent switched off (fewer active than the model's latents)."""
    c = cells(table, "none", 0.0)
    return float((c[ACTIVE] < LATENTS).sum())


def _count(breaking: str, wd: float | None = None):
    def detail(t: pd.DataFrame) -> str:
        c = cells(t, breaking, wd)
        return (f"{int((c[ACTIVE] == c[PREDICTED]).sum())}/{len(c)} cells equal the closed form; "
                f"largest loss gap {c[names.POSTERIOR_LOSS_GAP].max():.2g}")
    return detail


def _largest_wd(table: pd.DataFrame) -> float:
    return float(table[table.experiment == EXPERIMENT].weight_decay.max())


PREMISES = ("PC0/collapse_present", "PC1/converged")
CHECKS = [
    Check("PC0", "collapse_present", "premise", f"plain, wd 0: (member, beta) cells with fewer than {LATENTS} active "
          "latents (posterior collapse happens at all)" + FIXED, collapsed_cells, 1.0, ">=",
          has(EXPERIMENT, breaking="none", weight_decay=0.0), _count("none", 0.0)),
    Check("PC1", "staircase", "paper", "plain, wd 0: (member, beta) cells whose active-latent count differs from "
          "#{j <= k: lambda_j > beta eta^2} (theory: 0)", lambda t: mismatches(t, "none", 0.0), 0.0, "<=",
          has(EXPERIMENT, breaking="none", weight_decay=0.0), _count("none", 0.0), rests_on=PREMISES),
    Check("PC1", "converged", "premise", "plain, wd 0: largest loss above the closed-form optimum over the "
          "cells (the comparison presumes convergence)" + FIXED,
          lambda t: cells(t, "none", 0.0)[names.POSTERIOR_LOSS_GAP].max(), GAP, "<=",
          has(EXPERIMENT, breaking="none", weight_decay=0.0)),
    Check("PC2", "syre_same_count", "control", "syre, wd 0: cells whose count differs from the closed form (removing "
          "the symmetry does not move the optimum)", lambda t: mismatches(t, "syre", 0.0), 0.0, "<=",
          has(EXPERIMENT, breaking="syre", weight_decay=0.0), _count("syre", 0.0), rests_on=PREMISES),
    Check("PC2", "syre_no_revival", "control", "syre, every wd: cells with more active latents than the optimum "
          "(a latent whose collapse is the optimum is not revived)", lambda t: revived(t, "syre"), 0.0, "<=",
          has(EXPERIMENT, breaking="syre"), _count("syre"), rests_on=PREMISES),
    Check("PC3", "decay_collapses_more", "informational", "our hypothesis (weight decay acts as a further gamma): plain "
          "at the largest wd: cells with fewer active latents than the wd-0 closed form [hypothesis and threshold "
          "written after a calibration run had shown it]",
          lambda t: extra_collapse(t, _largest_wd(t)), 0.0, ">", has(EXPERIMENT, breaking="none"),
          lambda t: f"wd {_largest_wd(t):g}", rests_on=PREMISES),
]
