"""Posterior collapse of linear VAEs (claims PC: symexp.claims.posterior_collapse) — from the tidy table.

Active latents at the last step against beta eta^2: the closed-form staircase #{j : lambda_j > beta eta^2}
(black steps) with every measured (seed, beta) cell over it (points, jittered apart), (a) plain and
syre at wd = 0, (b) plain at every weight decay of the sweep.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from symexp.claims.posterior_collapse import ACTIVE, EXPERIMENT, PREDICTED, cells  # noqa: E402
from symexp.plots import save  # noqa: E402


def _staircase(ax, c: pd.DataFrame) -> None:
    """The closed-form counts at the grid's betas, each drawn over the span to its geometric neighbours."""
    ref = c.groupby("beta")[PREDICTED].first().sort_index()
    b = ref.index.to_numpy()
    mids = np.sqrt(b[1:] * b[:-1])
    edges = np.concatenate([[b[0] ** 2 / mids[0]], mids, [b[-1] ** 2 / mids[-1]]]) if len(b) > 1 else b * [0.7, 1.4]
    ax.stairs(ref.to_numpy(), edges, color="k", lw=1.5, label="closed form #{j: λⱼ > βη²}")


def _points(ax, c: pd.DataFrame, color: str, label: str, shift: float) -> None:
    seeds = sorted(c.seed.unique())
    jitter = {s: 1 + shift + 0.04 * (i - (len(seeds) - 1) / 2) for i, s in enumerate(seeds)}
    ax.scatter(c.beta * c.seed.map(jitter), c[ACTIVE], s=18, color=color, alpha=0.8, label=label)


def draw(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    t = table[table.experiment == EXPERIMENT]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    plain = cells(t, "none")
    _staircase(axes[0], plain)
    _points(axes[0], plain[plain.weight_decay == 0], "C0", "measured, plain", -0.06)
    if (t.breaking == "syre").any():
        syre = cells(t, "syre")
        _points(axes[0], syre[syre.weight_decay == 0], "C1", "measured, syre (negative control)", 0.06)
    axes[0].set(title="(a) wd = 0: active latents vs β")
    _staircase(axes[1], plain)
    wds = sorted(plain.weight_decay.unique())
    for i, wd in enumerate(wds):
        _points(axes[1], plain[plain.weight_decay == wd], plt.cm.plasma(i / max(1, len(wds))), f"plain, wd {wd:g}",
                0.08 * (i - (len(wds) - 1) / 2))
    axes[1].set(title="(b) weight decay switches further latents off")
    for ax in axes:
        ax.set(xscale="log", xlabel="β (η² = 1)", ylabel="active latents (KL > 0.01 nats)",
               yticks=np.arange(0, int(plain[PREDICTED].max()) + 1))
        ax.legend(fontsize=7)
    fig.suptitle("Posterior collapse in a linear VAE: measured active latents over the predicted staircase "
                 "(λᵢ = 4·2^(1−i), k = 8)")
    return save(fig, out_dir, "posterior_collapse")
