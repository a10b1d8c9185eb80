"""T2 / C3 (paper.md 2.3): the critical weight decay gamma* = |E[x r]| of a dead tanh unit — from the
tidy table alone.

(a) final |(u, w)| (one unit) and |theta| (the 4-unit net) vs gamma / gamma*, every seed, exact zeros
    floored at FLOOR; gamma* = |E[x y]| is the `critical` reference column (1 by the data's rescaling);
(b) |theta| over GD steps for each gamma / gamma* (one unit): the dead point attracts ever more
    slowly as gamma -> gamma* from above;
(c) the 4-unit net: fraction of dead units vs gamma / gamma*, and max_i gamma*_i / gamma, each unit's
    own threshold |E[x r_-i]| at the final weights over gamma — a unit can stay dead only where it is <= 1.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from symexp.claims.theory_critical import DEAD, EXPERIMENT, NORM, STAR, WHOLE, WIDTH, members  # noqa: E402
from symexp.plots import save  # noqa: E402

FLOOR = 1e-30  # display floor for exact zeros on the log axis


def draw(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    t = table[table.experiment == EXPERIMENT]
    m = members(table)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    for k, (width, s) in enumerate(m.groupby(WIDTH)):
        label = "one unit, ‖(u, w)‖" if width == 1 else f"{width} units, ‖θ‖"
        axes[0].scatter(s.ratio, s[f"{WHOLE}:{NORM}"].clip(lower=FLOOR), s=14, color=f"C{k}", alpha=0.7)
        g = s.assign(v=s[f"{WHOLE}:{NORM}"].clip(lower=FLOOR)).groupby("ratio")["v"].max()
        axes[0].plot(g.index, g.values, color=f"C{k}", label=f"{label} (max over seeds)")
    axes[0].axvline(1.0, color="k", ls="--", lw=1, label="γ* = ‖E[x y]‖")
    axes[0].axhline(DEAD, color="grey", ls=":", lw=1, label=f"dead: {DEAD:g}")
    axes[0].set(yscale="log", xlabel="γ / γ*", ylabel=f"final norm (0 floored at {FLOOR:g})",
                title="(a) the unit dies exactly above γ*")
    one_unit = m[m[WIDTH] == 1].job.unique()
    one = t[t.job.isin(one_unit) & (t.layer == WHOLE) & (t.metric == NORM) & (t.seed == t.seed.min())]
    star = m[f"{WHOLE}:{STAR}"].iloc[0]
    cmap = plt.get_cmap("coolwarm")
    ratios = sorted(m.ratio.unique())
    for j, ratio in enumerate(ratios):
        run = one[(one.gamma / star).round(6) == ratio].sort_values("step")
        axes[1].plot(run.step, run.value.clip(lower=FLOOR), color=cmap(j / max(len(ratios) - 1, 1)), label=f"{ratio:g}")
    axes[1].axhline(DEAD, color="grey", ls=":", lw=1)
    axes[1].set(yscale="log", xlabel="GD step", ylabel="‖(u, w)‖",
                title="(b) one unit over training (seed 0), by γ/γ*")
    axes[1].legend(fontsize=6, ncol=2)
    multi = m[m[WIDTH] > 1]
    if len(multi):
        g = multi.groupby("ratio")[["dead_frac", "dead_star_over_gamma"]].agg(["mean", "max"])
        axes[2].plot(g.index, g[("dead_frac", "mean")], "o-", ms=3, label=f"fraction of dead units (< {DEAD:g})")
        axes[2].plot(g.index, g[("dead_star_over_gamma", "max")], "s--", ms=3,
                     label="max over dead units of γ*ᵢ / γ, γ*ᵢ = ‖E[x r₋ᵢ]‖ at the end")
        axes[2].axvline(1.0, color="k", ls="--", lw=1)
        axes[2].set(xlabel="γ / γ*", ylabel="fraction / ratio", title=f"(c) {int(multi[WIDTH].iloc[0])}-unit net")
        axes[2].legend(fontsize=7, loc="center right")
    axes[0].legend(fontsize=7)
    fig.suptitle("Critical weight decay of a dead tanh unit, γ* = ‖E[x r]‖ (γ = wd/2; full-batch GD, every seed)")
    return save(fig, out_dir, "theory_critical")
