"""Figure 1 (middle): rotation symmetry -> low rank (claims C2, C4: symexp.claims.fig1_middle) — from
the tidy table alone.

(a) SGD noise: tau-rank of W = U V over training for each eta/B, at gamma = 0 and gamma > 0, plain U V
    vs the residual control U (V x + x), and the final rank vs eta/B;
(b) full-batch GD: singular values of U V vs gamma against the exact (sigma_i(M_hat) - gamma)_+.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from symexp.claims import KEYS, final  # noqa: E402
from symexp.claims.fig1_middle import NOISE, RANK, SPECTRUM, TAU, cells  # noqa: E402
from symexp.metrics import names  # noqa: E402
from symexp.plots import band, save  # noqa: E402

SHOWN_SV = 12  # singular values drawn in panel (b)
STYLES = {"none": ("U V", "-"), "residual": ("U (V x + x), residual", "--")}


def _time_panel(ax, t: pd.DataFrame, gamma: float) -> None:
    r = t[(t.metric == RANK) & (t.gamma == gamma)].assign(noise=lambda d: d.lr / d.batch_size)
    levels = sorted(r.noise.unique())
    cmap = plt.get_cmap("viridis")
    for brk, (label, ls) in STYLES.items():
        for k, eta_b in enumerate(levels):
            s = r[(r.breaking == brk) & (r.noise == eta_b)]
            if len(s):
                one = s.iloc[0]
                band(ax, s, "step", color=cmap(k / max(len(levels) - 1, 1)), ls=ls,
                     label=f"{label}, η={one.lr:g}, B={one.batch_size}")
    ax.set(xlabel="SGD step", ylabel=f"τ-rank of UV (σᵢ > {TAU:g}·σ₁)", title=f"(a) SGD noise, γ = {gamma:g}")
    ax.legend(fontsize=5, ncol=2)


def _final_panel(ax, table: pd.DataFrame) -> None:
    final_ranks = cells(table)
    for j, gamma in enumerate(sorted(final_ranks.gamma.unique())):
        for brk, (label, ls) in STYLES.items():
            c = final_ranks[(final_ranks.gamma == gamma) & (final_ranks.breaking == brk)].sort_values("noise")
            ax.plot(c.noise, c["mean"], marker="o", ms=3, color=f"C{j}", ls=ls, label=f"{label}, γ={gamma:g}")
    ax.set(xscale="log", xlabel="η / B", ylabel="final τ-rank (mean over seeds)",
           title="(a) final rank vs gradient noise")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # minor labels of a short log axis overlap
    ax.legend(fontsize=6)


def _gamma_panel(ax, t: pd.DataFrame) -> None:
    for i in range(SHOWN_SV):
        color = plt.get_cmap("tab20")(i % 20)
        for brk, (label, ls) in STYLES.items():
            s = t[(t.breaking == brk) & (t.metric == names.singular_value(i))].groupby("gamma")["value"].mean()
            ax.plot(s.index, s.values, ls="none", marker="o" if brk == "none" else "x", ms=4, color=color,
                    label=label if i == 0 else None)
        ref = t[(t.breaking == "none") & (t.metric == names.ref_singular_value(i))]
        r = ref.groupby("gamma")["value"].mean()
        ax.plot(r.index, r.values, "k-", lw=0.7, label="(σᵢ(M) − γ)₊, exact" if i == 0 else None)
    ax.set(xlabel="γ = wd/2", ylabel=f"σᵢ(UV), i < {SHOWN_SV}", title="(b) weight decay, full-batch GD")
    ax.set_xscale("symlog", linthresh=1e-2)
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.legend(fontsize=7)


def draw(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    last = final(table)
    kept = table.set_index(KEYS).index.isin(last.set_index(KEYS).index)  # drop diverged members
    noise = table[kept & (table.experiment == NOISE)]
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.4))
    gammas = sorted(noise.gamma.unique())
    for ax, gamma in zip(axes[:2], (gammas[0], gammas[-1])):
        _time_panel(ax, noise, gamma)
    _final_panel(axes[2], table)
    _gamma_panel(axes[3], last[last.experiment == SPECTRUM])
    fig.suptitle("Figure 1 (middle): rotation symmetry → low rank (mean ± sd over seeds; diverged members dropped)")
    return save(fig, out_dir, "fig1_middle")
