"""C1 (Figure 1, left): rescaling symmetry -> sparsity. u*v with L2 gamma is the Lasso(2 gamma);
plain w and the offset control are not sparsified; at gamma = 0, SGD noise alone sparsifies u*v."""
from __future__ import annotations

import numpy as np
import pandas as pd

from symexp.claims import Check, final, has, select
from symexp.metrics import names

GAMMA_SWEEP, NOISE_SWEEP = "fig1_left", "fig1_left_noise"
TAU = 1e-3  # the sparsity threshold the claims read (metrics.sparsity_tau must include it)
SPARSITY = names.frac_zero(TAU)
LASSO_SPARSITY = names.ref("lasso", SPARSITY)
MISMATCH = names.ref("lasso", names.support_mismatch(TAU))
COEF_DIFF = names.ref("lasso", names.MAX_ABS_DIFF)


def _uv(table: pd.DataFrame, metric: str) -> pd.Series:
    """Final `metric` of every symmetric, unbroken u*v member with gamma > 0."""
    t = select(final(table[table.experiment == GAMMA_SWEEP]), GAMMA_SWEEP, metric)
    return t[(t.gamma > 0) & (t.symmetry == "rescaling") & (t.breaking == "none")]["value"]


def _sparsity(table: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Seed-mean final sparsity per (symmetry, breaking, teacher, gamma > 0), and of plain w at gamma = 0
    per teacher."""
    t = select(final(table[table.experiment == GAMMA_SWEEP]), GAMMA_SWEEP, SPARSITY)
    sp = t[t.gamma > 0].groupby(["symmetry", "breaking", "data.teacher", "gamma"])["value"].mean()
    g0 = t[(t.gamma == 0) & (t.symmetry == "plain") & (t.breaking == "none")]
    return sp, g0.groupby("data.teacher")["value"].mean()


def plain_gain(table: pd.DataFrame) -> float:
    sp, plain0 = _sparsity(table)
    plain = sp.loc["plain", "none"]
    return float((plain - plain0.reindex(plain.index, level=0).values).max())


def offset_ratio(table: pd.DataFrame) -> float:
    sp, _ = _sparsity(table)
    return float(sp.loc["rescaling", "offset"].mean() / sp.loc["rescaling", "none"].mean())


def noise_gain(table: pd.DataFrame) -> float:
    """u*v sparsity at the largest stable eta/B minus at the smallest (cells where every seed finished)."""
    s = select(final(table[table.experiment == NOISE_SWEEP]), NOISE_SWEEP, SPARSITY)
    uv = s[s.symmetry == "rescaling"].assign(ratio=lambda d: d.lr / d.batch_size)
    per_cell = uv.groupby("ratio")["value"].agg(["mean", "count"])
    stable = per_cell[per_cell["count"] >= uv.seed.nunique()]
    return float(stable["mean"].iloc[-1] - stable["mean"].iloc[0]) if len(stable) > 1 else np.nan


CHECKS = [
    Check("C1", "support", "paper",
          f"u⊙v with L2 γ has the support of Lasso(2γ) (τ={TAU:g}) at every γ>0, both teachers, all seeds: "
          "max number of mismatched coordinates",
          lambda t: _uv(t, MISMATCH).max(), threshold=0, op="<=", applies=has(GAMMA_SWEEP)),
    Check("C1", "coefficients", "paper",
          "u⊙v with L2 γ equals Lasso(2γ): max |w_uv − w_lasso| over γ>0, teachers, seeds",
          lambda t: _uv(t, COEF_DIFF).max(), threshold=1e-3, op="<", applies=has(GAMMA_SWEEP)),
    Check("C1", "plain_dense", "control",
          "weight decay does not sparsify plain w: max over γ, teacher of mean sparsity(γ) − sparsity(0)",
          plain_gain, threshold=0.05, op="<", applies=has(GAMMA_SWEEP)),
    Check("C1", "offset_control", "control",
          "a fixed random offset removes the sparsity: mean sparsity over γ of offset-u⊙v / of u⊙v",
          offset_ratio, threshold=0.5, op="<", applies=has(GAMMA_SWEEP)),
    Check("C1", "noise", "paper",
          "γ=0 SGD: u⊙v sparsity at the largest η/B with no diverged seed minus at the smallest η/B",
          noise_gain, threshold=0.1, op=">=", applies=has(NOISE_SWEEP)),
]
