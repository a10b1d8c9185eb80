"""Neural collapse against weight decay (claims NC: symexp.claims.neural_collapse) — from the tidy table.

(a) NC1 at the last step vs weight decay, plain (solid) and syre (dashed); (b) the centred feature rank
of the penultimate features, with C - 1 marked; (c) NC2 (ETF error, equinorm) and NC3 vs weight decay;
(d) NC1 over training for each weight decay (plain), a dot where the terminal phase starts (the latest seed's
measured start; none when an arm never holds 100 % training accuracy to the end). Mean +- sd over seeds; wd = 0
is drawn at the left edge of the log axis.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from symexp.claims import final  # noqa: E402
from symexp.claims.neural_collapse import CLASSES, EXPERIMENT, RANK, arms  # noqa: E402
from symexp.metrics import names  # noqa: E402
from symexp.plots import band, save  # noqa: E402

ARMS = {"none": ("plain", "-"), "syre": ("syre", "--")}


def _vs_wd(ax, t: pd.DataFrame, metric: str, left: float, color: str = "C0", label: str = "") -> None:
    for brk, (name, ls) in ARMS.items():
        s = t[(t.breaking == brk) & (t.metric == metric)].assign(wd=lambda d: np.maximum(d.weight_decay, left))
        if len(s):
            band(ax, s, "wd", color=color, ls=ls, label=f"{label}{name}")


def draw(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    t = table[table.experiment == EXPERIMENT]
    last = final(t)
    wds = sorted(w for w in t.weight_decay.unique() if w > 0)
    left = wds[0] / 3 if wds else 1e-5
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.4))
    _vs_wd(axes[0], last, names.NC1, left)
    axes[0].set(xscale="log", yscale="log", ylabel="NC1 = tr(Σ_W Σ_B⁺)/C", title="(a) within-class variability")
    _vs_wd(axes[1], last, RANK, left)
    axes[1].axhline(CLASSES - 1, color="k", lw=0.8, ls=":", label="C − 1")
    axes[1].set(xscale="log", ylabel="feature rank (centred)", title="(b) penultimate feature rank")
    for i, (metric, label) in enumerate(((names.ETF_ERROR, "NC2 ETF error, "), (names.EQUINORM, "NC2 equinorm, "),
                                         (names.NC3, "NC3, "))):
        _vs_wd(axes[2], last, metric, left, color=f"C{i + 1}", label=label)
    axes[2].set(xscale="log", ylabel="distance from the simplex ETF", title="(c) NC2 and NC3")
    plain = t[(t.breaking == "none") & (t.metric == names.NC1)]
    starts = arms(t).start
    for i, (wd, s) in enumerate(plain.groupby("weight_decay")):
        m = s.groupby("step").value.mean()
        color = plt.cm.viridis(i / max(1, len(wds)))
        axes[3].plot(m.index, m.values, color=color, label=f"wd {wd:g}")
        if not np.isnan(starts.get(wd, np.nan)):
            axes[3].plot([starts[wd]], [m[starts[wd]]], "o", color=color)
    axes[3].set(yscale="log", xlabel="step", ylabel="NC1", title="(d) NC1 during training (plain; • terminal phase)")
    for ax in axes[:3]:
        ax.set_xlabel(f"weight decay (wd = 0 drawn at {left:.0e})")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle("Neural collapse vs weight decay on a balanced Fashion-MNIST subset (MLP, training features; "
                 "plain solid, syre dashed; mean ± sd over seeds)")
    return save(fig, out_dir, "neural_collapse")
