"""Figure 1 (right): permutation symmetry -> homogeneous ensembling (claims C5: symexp.claims.fig1_right)
— from the tidy table alone.

(a-c) penultimate-feature correlation over the test subset (one member: the first seed), rows and
columns reordered by average-linkage clustering on 1 - |corr|: symmetric model at wd = 0, at the
largest wd, and the offset-broken control at the largest wd (rows `corr/i/j`, written at the final
step when metrics.corr_matrix is set); (d) independent units vs wd per hidden layer of the MLP,
symmetric (solid) and broken (dashed) on the same axes; (e) the same for the narrow ResNet (sum over
its probed block channels; its controls come from experiment fig1_right_resnet_controls, at wd = 0 and
the largest wd only at quick scale); (f) test accuracy vs wd.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.cluster.hierarchy import leaves_list, linkage  # noqa: E402
from scipy.spatial.distance import squareform  # noqa: E402

from symexp.claims import final  # noqa: E402
from symexp.claims.fig1_right import MLP, RESNET, source, units_vs_wd  # noqa: E402
from symexp.metrics import names  # noqa: E402
from symexp.plots import save  # noqa: E402

STYLES = {"none": ("symmetric", "-"), "offset": ("broken: fixed offset θ + b", "--"),
          "mask": ("broken: W-Asym pinned entries", ":")}
NEAR = 0.99  # the heatmap titles count pairs with |corr| above this


def correlation(t: pd.DataFrame, experiment: str, breaking: str, wd: float) -> np.ndarray | None:
    """The stored penultimate correlation matrix of the first seed's member, or None if not written."""
    rows = t[(t.experiment == experiment) & (t.breaking == breaking) & (t.weight_decay == wd)]
    pairs = rows.metric.map(names.corr_pair)
    rows, pairs = rows[pairs.notna()], pairs[pairs.notna()]
    if not len(rows):
        return None
    first = (rows.seed == rows.seed.min()).to_numpy()
    rows, ij = rows[first], np.array(pairs[first].tolist(), dtype=int)
    h = int(ij.max()) + 1
    c = np.eye(h)
    c[ij[:, 0], ij[:, 1]] = c[ij[:, 1], ij[:, 0]] = rows.value.to_numpy()
    return c


def clustered(c: np.ndarray) -> np.ndarray:
    dist = np.clip(1.0 - np.abs(c), 0.0, None)
    np.fill_diagonal(dist, 0.0)
    order = leaves_list(linkage(squareform(dist, checks=False), method="average"))
    return c[np.ix_(order, order)]


def draw(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    t = final(table)
    # every curve from the jobs its checks read (claims.fig1_right.source), labelled with its model's experiment
    t = pd.concat([t[(t.experiment == source(exp, brk)) & (t.breaking == brk)].assign(experiment=exp)
                   for exp in (MLP, RESNET) for brk in STYLES])
    fig, axes = plt.subplots(2, 3, figsize=(15, 9))
    wds = sorted(t[t.experiment == MLP].weight_decay.unique())
    im = None  # no heatmap without corr rows (metrics.corr_matrix off)
    for ax, (brk, wd) in zip(axes[0], [("none", wds[0]), ("none", wds[-1]), ("offset", wds[-1])]):
        c = correlation(t, MLP, brk, wd)
        if c is None:
            ax.set_axis_off()
            continue
        near = (np.abs(c[np.triu_indices(len(c), 1)]) > NEAR).mean()
        im = ax.imshow(clustered(c), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set(title=f"{STYLES[brk][0]}, wd = {wd:g}\n|corr| > {NEAR:g}: {100 * near:.2f} % of pairs",
               xlabel="penultimate unit (clustered)", ylabel="penultimate unit (clustered)")
    if im is not None:
        fig.colorbar(im, ax=axes[0, 2], shrink=0.8, label="Pearson correlation over test images")
    for ax, exp in ((axes[1, 0], MLP), (axes[1, 1], RESNET)):
        u = units_vs_wd(t, exp) if (t.experiment == exp).any() else pd.DataFrame()
        if not len(u):
            ax.set_axis_off()
            continue
        if exp == RESNET:  # eight block layers: their sum keeps the panel readable
            u = u.sum(axis=1).to_frame("all blocks")
        for brk, (label, ls) in STYLES.items():
            if brk not in u.index.get_level_values(0):
                continue
            for k, layer in enumerate(u.columns):
                s = u.loc[brk, layer]
                ax.plot(np.maximum(s.index, wds[1] / 3), s.values, ls=ls, marker="o", ms=3, color=f"C{k}",
                        label=f"{layer}, {label}")
        ax.set(xscale="log", xlabel=f"weight decay (wd = 0 drawn at {wds[1] / 3:.0e})", ylabel="independent units",
               title=f"({'d' if exp == MLP else 'e'}) {'MLP 784-128-128-10' if exp == MLP else 'narrow ResNet18'}")
        ax.legend(fontsize=7)
    acc = t[t.metric == names.ACC_TEST].groupby(["experiment", "breaking", "weight_decay"])["value"].mean()
    for (exp, brk), s in acc.groupby(level=[0, 1]):
        s = s.droplevel([0, 1])
        axes[1, 2].plot(np.maximum(s.index, wds[1] / 3), s.values, ls=STYLES[brk][1], marker="o", ms=3,
                        color="C0" if exp == MLP else "C3", label=f"{exp}, {STYLES[brk][0]}")
    axes[1, 2].set(xscale="log", xlabel="weight decay", ylabel="test accuracy", title="(f) test accuracy")
    axes[1, 2].legend(fontsize=7)
    fig.suptitle("Permutation symmetry → homogeneous ensembling: weight decay merges or kills units; with the "
                 "symmetry broken (fixed offset, W-Asym mask) it does not\n(Fashion-MNIST; heatmaps: first seed; "
                 "curves: mean over seeds)")
    return save(fig, out_dir, "fig1_right")
