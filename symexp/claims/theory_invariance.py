"""C8 (paper.md 2.2, Theorem 1 parts 1-2): on a tanh net started with unit 0 dead and units 1, 2
identical, O^T theta stays exactly 0 over training, the loss Hessian is block-diagonal there and the
gradient has no component out of the symmetric point; a rotated P of the same rank is the control."""
from __future__ import annotations

import pandas as pd

from symexp.claims import Check, ClaimError, has, select
from symexp.metrics import names

EXPERIMENT = "theory_invariance"
EXACT = 1e-12  # "exactly 0": float64 rounding of O(1) quantities is ~1e-16; this leaves 4 decades
CLEAR = 1e-3  # "clearly nonzero" relative cross block in a random basis
MIRRORS = ("sign", "perm", "rotated")  # the model's probes: <mirror>_break, hessian_cross_<mirror>, ...


def runs(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (job, member, step) with every measured view's norm as a column (all eval steps)."""
    t = select(table, EXPERIMENT, names.NORM)
    wide = t.pivot_table(index=["job", "member", "batch_size", "gamma", "seed", "step"], columns="layer",
                         values="value").reset_index()
    needed = ["hessian", "sign_break", "perm_break"]
    needed += [f"{v}_{m}" for m in MIRRORS for v in ("hessian_cross", "grad_break")]
    missing = [p for p in needed if p not in wide]
    if missing:
        raise ClaimError(f"metric {names.NORM!r} of experiment {EXPERIMENT!r} has no probe {', '.join(missing)} "
                         "(model.probe_hessian: true logs them)")
    for name in MIRRORS:
        wide[f"rel_{name}"] = wide[f"hessian_cross_{name}"] / wide["hessian"]
    return wide


def describe_runs(table: pd.DataFrame) -> str:
    w = runs(table)
    return (f"{len(w.groupby(['job', 'member']))} runs (B ∈ {sorted(int(b) for b in w.batch_size.unique())}, "
            f"γ ∈ {sorted(float(g) for g in w.gamma.unique())}, {w.seed.nunique()} seeds), every eval step")


def _check(check: str, kind: str, statement: str, measure, threshold: float, op: str) -> Check:
    return Check("C8", check, kind, statement, measure, threshold=threshold, op=op, applies=has(EXPERIMENT),
                 detail=describe_runs)


CHECKS = [
    _check("invariant_sign", "paper", "T1: the dead unit's ‖(u₀, w₀)‖ (Oᵀθ of the sign mirror) stays 0 over "
           "training: max over every run and eval step", lambda t: runs(t)["sign_break"].max(), EXACT, "<"),
    _check("hessian_block_sign", "paper", "T1: at those points the Hessian is block-diagonal: max "
           "‖P H (I−P)‖_F/‖H‖_F, sign mirror", lambda t: runs(t)["rel_sign"].max(), EXACT, "<"),
    _check("invariant_perm", "paper", "T1: the twin difference ‖θ₁ − θ₂‖/√2 (Oᵀθ of the perm mirror) stays 0 "
           "over training: max over every run and eval step", lambda t: runs(t)["perm_break"].max(), EXACT, "<"),
    _check("hessian_block_perm", "paper", "T1: at those points the Hessian is block-diagonal: max "
           "‖P H (I−P)‖_F/‖H‖_F, perm mirror", lambda t: runs(t)["rel_perm"].max(), EXACT, "<"),
    _check("gradient_break", "paper", "T1: Oᵀ∇L = 0 there (Thm 1.1): max ‖P ∇L‖ over both mirrors",
           lambda t: runs(t)[["grad_break_sign", "grad_break_perm"]].max().max(), EXACT, "<"),
    _check("hessian_block_rotated", "control", "T1: control: the same-rank P in a random basis sees a nonzero "
           "cross block: min ‖P H (I−P)‖_F/‖H‖_F", lambda t: runs(t)["rel_rotated"].min(), CLEAR, ">"),
]
