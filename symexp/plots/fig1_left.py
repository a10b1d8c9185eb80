"""Figure 1 (left): rescaling symmetry -> sparsity (claims C1: symexp.claims.fig1_left) — from the tidy
table alone.

(a) sparsity vs gamma (sparse and dense teacher): u*v, plain w and the offset-broken controls, with the
    exact Lasso(2 gamma) sparsity overlaid; (b) gamma = 0: sparsity vs lr for several batch sizes.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from symexp.claims import final  # noqa: E402
from symexp.claims.fig1_left import GAMMA_SWEEP, LASSO_SPARSITY, NOISE_SWEEP, SPARSITY, TAU  # noqa: E402
from symexp.plots import band, save  # noqa: E402

STYLES = {("rescaling", "none"): ("u⊙v", "C0", "-"), ("plain", "none"): ("plain w", "C1", "-"),
          ("rescaling", "offset"): ("u⊙v + offset (broken)", "C2", "--"),
          ("plain", "offset"): ("w + offset", "C3", ":")}


def _gamma_panel(ax, t: pd.DataFrame, teacher: str) -> None:
    t = t[(t["data.teacher"] == teacher) & (t["gamma"] > 0)]
    for (sym, brk), (label, color, ls) in STYLES.items():
        s = t[(t.symmetry == sym) & (t.breaking == brk) & (t.metric == SPARSITY)]
        if len(s):
            band(ax, s, "gamma", label=label, color=color, ls=ls)
    ref = t[(t.symmetry == "rescaling") & (t.breaking == "none") & (t.metric == LASSO_SPARSITY)]
    if len(ref):
        r = ref.groupby("gamma")["value"].mean()
        ax.plot(r.index, r.values, "k*", ms=9, label="Lasso(2γ), exact")
    ax.set(xscale="log", xlabel="γ = wd/2", ylabel=f"sparsity (|θᵢ| < {TAU:g}·max|θ|)",
           title=f"(a) weight decay, {teacher} teacher", ylim=(-0.02, 1.02))
    ax.legend(fontsize=7)


def _noise_panel(ax, t: pd.DataFrame) -> None:
    s = t[t.metric == SPARSITY]
    for i, bs in enumerate(sorted(s.batch_size.unique())):
        for sym, ls in (("rescaling", "-"), ("plain", ":")):
            band(ax, s[(s.batch_size == bs) & (s.symmetry == sym)], "lr", color=f"C{i}", ls=ls,
                 label=f"{'u⊙v' if sym == 'rescaling' else 'plain'}, B={bs}")
    ax.set(xscale="log", xlabel="learning rate η", ylabel="sparsity", ylim=(-0.02, 1.02),
           title="(b) γ = 0: gradient noise (η/B)")
    ax.legend(fontsize=6, ncol=2)


def draw(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    t = final(table)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    gamma = t[t.experiment == GAMMA_SWEEP]
    for ax, teacher in zip(axes[:2], ("sparse", "dense")):
        _gamma_panel(ax, gamma, teacher)
    _noise_panel(axes[2], t[t.experiment == NOISE_SWEEP])
    fig.suptitle("Figure 1 (left): rescaling symmetry → sparsity (mean ± sd over seeds; diverged members dropped)")
    return save(fig, out_dir, "fig1_left")
