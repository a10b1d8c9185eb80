"""Loss of plasticity (claims LP/PM: symexp.claims.plasticity) — from the tidy table alone.

Top row, slowly-changing regression: (a) online error per window against examples seen, per arm;
(b) dead units (solid) and mirror-plane units (zero plane + duplicates, dashed) of the hidden layer;
(c) effective rank of the hidden features on the probe set. Bottom row, permuted Fashion-MNIST:
(d) test accuracy of each task at its end; (e) dead and mirror-plane units summed over hidden layers;
(f) effective rank of the last hidden layer. Seed means; arms at the largest weight decay of the sweep
(solid) and the smallest (thin), plain backprop in black.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from symexp.claims import ClaimError  # noqa: E402
from symexp.claims.plasticity import ARM_BREAKING, PERMUTED, SCR, cell, mirror, per_member  # noqa: E402
from symexp.metrics import names  # noqa: E402
from symexp.plots import save  # noqa: E402

COLORS = {"plain": "k", "L2": "C3", "syre": "C0", "L2-Init": "C2"}


def arms(table: pd.DataFrame, experiment: str) -> list[tuple[str, str, float, float]]:
    """(arm, breaking, wd, line width) for every arm the table holds."""
    t = table[table.experiment == experiment]
    wds = sorted(w for w in t.weight_decay.unique() if w > 0)
    out = [("plain", "none", 0.0, 2.0)] if ((t.breaking == "none") & (t.weight_decay == 0)).any() else []
    for arm, brk in ARM_BREAKING.items():
        out += [(arm, brk, wd, 2.0 if wd == wds[-1] else 0.8) for wd in wds
                if ((t.breaking == brk) & (t.weight_decay == wd)).any()]
    return out


def _curves(ax, table, experiment, value, ylabel, title, xscale=1.0):
    drew = False
    for arm, brk, wd, lw in arms(table, experiment):
        try:
            s = value(cell(table, experiment, brk, wd))
        except ClaimError:
            continue
        ax.plot(s.index * xscale, s.values, color=COLORS[arm], lw=lw, label=f"{arm}" + (f", wd {wd:g}" if wd else ""))
        drew = True
    ax.set(ylabel=ylabel, title=title)
    if drew:
        ax.legend(fontsize=7)
    else:
        ax.set_axis_off()


def _online(t):
    return per_member(t, names.LOSS_ONLINE).mean(axis=1)


def _accuracy(t):
    return per_member(t, names.ACC_TEST).mean(axis=1)


def _units(ax, table, experiment, title, xscale):
    for arm, brk, wd, lw in arms(table, experiment):
        if lw < 1 and arm != "plain":
            continue
        t = cell(table, experiment, brk, wd)
        dead = per_member(t, names.DEAD_UNITS, layer=None).mean(axis=1)
        plane = mirror(t).mean(axis=1)
        label = arm + (f", wd {wd:g}" if wd else "")
        ax.plot(dead.index * xscale, dead.values, color=COLORS[arm], lw=1.5, label=f"{label}: dead")
        ax.plot(plane.index * xscale, plane.values, color=COLORS[arm], lw=1.5, ls="--", label=f"{label}: mirror plane")
    ax.set(ylabel="units (seed mean)", title=title)
    ax.legend(fontsize=6)


def draw(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    scr, pm = (table[table.experiment == e] for e in (SCR, PERMUTED))
    if len(scr):
        _curves(axes[0, 0], scr, SCR, _online, "online squared error (window mean)", "(a) SCR: error per window", 1e-3)
        _units(axes[0, 1], scr, SCR, "(b) SCR: dead vs mirror-plane units", 1e-3)
        _curves(axes[0, 2], scr, SCR, lambda t: per_member(t, names.FEATURE_ERANK, "hidden1").mean(axis=1),
                "effective rank", "(c) SCR: hidden features' effective rank", 1e-3)
        for ax in axes[0]:
            ax.set_xlabel("examples seen (thousands)")
    else:
        for ax in axes[0]:
            ax.set_axis_off()
    if len(pm):
        last = sorted(pm[pm.metric == names.FEATURE_ERANK].layer.unique())[-1]
        spt = int(pm[pm.step > 0].step.min())  # one evaluation per task
        _curves(axes[1, 0], pm, PERMUTED, _accuracy, "test accuracy (task's permutation)", "(d) permuted: accuracy per task",
                1 / spt)
        _units(axes[1, 1], pm, PERMUTED, "(e) permuted: dead vs mirror-plane units (all layers)", 1 / spt)
        _curves(axes[1, 2], pm, PERMUTED, lambda t: per_member(t, names.FEATURE_ERANK, last).mean(axis=1),
                "effective rank", f"(f) permuted: {last} effective rank", 1 / spt)
        for ax in axes[1]:
            ax.set_xlabel("task")
    else:
        for ax in axes[1]:
            ax.set_axis_off()
    fig.suptitle("Loss of plasticity: plain backprop, + L2, + syre (symmetry removal), + L2-Init (seed means; mirror "
                 "plane = units on the zero plane + duplicated units)")
    return save(fig, out_dir, "plasticity")
