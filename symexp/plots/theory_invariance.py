"""T1 / C8 (paper.md 2.2, Theorem 1 parts 1-2): invariance of the symmetric points and the block-diagonal
Hessian, on a tanh net started with unit 0 dead and units 1, 2 identical — from the tidy table alone.

(a) |O^T theta| of the sign mirror (the dead unit's (u, w)) and of the permutation mirror (the twin
    difference) over SGD / GD steps, against the norm of a free unit for scale;
(b) |P H (I - P)|_F / |H|_F of the full-batch loss Hessian for the two mirrors' P and for a randomly
    rotated P of the same rank (exact zeros floored at FLOOR for the log axis);
(c) |P grad| for the same three P: the gradient never points out of a symmetric point.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from symexp.claims.theory_invariance import EXACT, runs  # noqa: E402
from symexp.plots import save  # noqa: E402

FLOOR = 1e-20  # display floor for exact zeros on log axes
MIRRORS = {"sign": ("sign mirror: dead unit 0", "C0"), "perm": ("permutation mirror: units 1 = 2", "C1"),
           "rotated": ("sign P in a random basis", "C3")}


def _label(row) -> str:
    return f"B={row.batch_size}, γ={row.gamma:g}"


def draw(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    w = runs(table)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    for (_, _), run in w.groupby(["job", "member"]):
        run = run.sort_values("step")
        ls = "-" if run.gamma.iloc[0] == 0 else "--"
        axes[0].plot(run.step, run.sign_break.clip(lower=FLOOR), color="C0", ls=ls, lw=1)
        axes[0].plot(run.step, run.perm_break.clip(lower=FLOOR), color="C1", ls=ls, lw=1)
        axes[0].plot(run.step, run.unit3, color="grey", ls=ls, lw=0.8)
        for name, (_, color) in MIRRORS.items():
            axes[1].plot(run.step, run[f"rel_{name}"].clip(lower=FLOOR), color=color, ls=ls, lw=1)
            axes[2].plot(run.step, run[f"grad_break_{name}"].clip(lower=FLOOR), color=color, ls=ls, lw=1)
    handles = [plt.Line2D([], [], color=c, label=lab) for lab, c in MIRRORS.values()]
    handles += [plt.Line2D([], [], color="k", ls="-", label="γ = 0"),
                plt.Line2D([], [], color="k", ls="--", label="γ > 0")]
    axes[0].legend(handles=[plt.Line2D([], [], color="C0", label="‖Oᵀθ‖ sign (dead unit)"),
                            plt.Line2D([], [], color="C1", label="‖Oᵀθ‖ perm (twin difference)"),
                            plt.Line2D([], [], color="grey", label="‖θ₃‖ free unit (scale)")], fontsize=7)
    for ax in axes[1:]:
        ax.legend(handles=handles, fontsize=7)
    exact = w[["sign_break", "perm_break"]].max().max() == 0
    if exact:  # the two curves coincide at the floor: say so rather than let one hide the other
        axes[0].text(0.02, 0.12, "sign and perm: exactly 0 at every step (drawn at the floor)",
                     transform=axes[0].transAxes, fontsize=7)
    for ax in axes:
        ax.axhline(EXACT, color="k", ls=":", lw=0.8)
        ax.set(yscale="log", xlabel="step")
    axes[0].set(ylabel=f"norm (0 floored at {FLOOR:g})", title="(a) the breaking component stays 0")
    axes[1].set(ylabel=f"‖P H (I − P)‖_F / ‖H‖_F (0 floored at {FLOOR:g})", title="(b) Hessian cross block")
    axes[2].set(ylabel=f"‖P ∇L‖ (0 floored at {FLOOR:g})", title="(c) gradient out of the symmetric point")
    labels = ", ".join(sorted({_label(r) for r in w.drop_duplicates(["job", "gamma"]).itertuples()}))
    fig.suptitle(f"Theorem 1 (1–2) on a 4-unit tanh net, every member ({labels}; B = n is full-batch GD; "
                 f"dotted: {EXACT:g})")
    return save(fig, out_dir, "theory_invariance")
