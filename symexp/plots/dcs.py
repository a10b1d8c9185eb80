"""DCS (paper.md 5, our experiment): |O^T theta| vs gamma for DCS, plain L2 and the soft penalty (claims
C7: symexp.claims.dcs) — from the tidy table alone.

(a) |O^T theta| vs gamma (log-log; exact zeros floored at FLOOR for display) with the predicted
    threshold gamma* (symexp.theory.dcs_threshold); (b) task (train) loss vs gamma; (c) |O^T theta|
    vs task loss: what each method buys at a given loss budget.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter  # noqa: E402

from symexp.claims.dcs import EXACT, LOOSE, LOSS, METHODS, NORM, gamma_star, per_member  # noqa: E402
from symexp.plots import band, save  # noqa: E402

FLOOR = 1e-18  # display floor for exact zeros on the log axis (float64 rounding is ~1e-16)
COLORS = {"dcs": "C0", "plain": "C1", "penalty": "C2"}


def draw(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    m, star = per_member(table), gamma_star(table)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for sym, label in METHODS.items():
        s, color = m[m.symmetry == sym], COLORS[sym]
        if not len(s):
            continue
        axes[0].scatter(s.gamma, s[NORM].clip(lower=FLOOR), color=color, s=12, alpha=0.7)
        g = s.assign(v=s[NORM].clip(lower=FLOOR)).groupby("gamma")["v"].max()
        axes[0].plot(g.index, g.values, color=color, label=f"{label} (max over seeds)")
        band(axes[1], s.rename(columns={LOSS: "value"}), "gamma", color=color, label=label)
        axes[2].scatter(s[LOSS], s[NORM].clip(lower=FLOOR), color=color, s=12, label=label)
    for ax in axes[:2]:
        ax.axvline(star, color="k", ls="--", lw=1, label=f"predicted γ* = {star:.3f}")
    for ax in (axes[0], axes[2]):
        ax.axhline(EXACT, color="grey", ls=":", lw=1)
        ax.axhline(LOOSE, color="grey", ls="-.", lw=1)
    axes[0].set(xscale="log", yscale="log", xlabel="γ = wd/2", ylabel=f"‖Oᵀθ‖ (floored at {FLOOR:g})",
                title="(a) constraint violation vs weight decay")
    axes[1].set(xscale="log", xlabel="γ = wd/2", ylabel="task loss (train MSE)", title="(b) task loss")
    axes[2].set(yscale="log", xlabel="task loss (train MSE)", ylabel="‖Oᵀθ‖",
                title=f"(c) violation vs loss (dotted {EXACT:g}, dash-dot {LOOSE:g})")
    for ax in axes[:2]:
        # the gamma grid spans about a decade: label 1-2-5 ticks in plain numbers, not one 10^0
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle("DCS: an artificial mirror symmetry makes Oᵀθ = 0 exact above γ* (k = 5 random O, dense "
                 "linear regression; every seed shown)")
    return save(fig, out_dir, "dcs")
