"""Loss of plasticity (claims LP/RL: symexp.claims.plasticity) — from the tidy table alone.

Top row, slowly-changing regression: (a) online error per window against examples seen, per arm, with the
linear learner as a reference line; (b) plain backprop's unit measures as fractions of the hidden layer: the
per-example zero fraction (LoP's), units silent on the window's pattern, units dead on every probe input, and
the smallest unit norm over its init norm; (c) zero-plane units at the end against eta*wd*T, per arm.
Bottom row, random-label memorisation: (d) end-of-task training accuracy per task; (e) dead units summed over
hidden layers; (f) zero-plane units at the end against eta*wd*T. Seed means; arms at the largest weight decay
of the sweep (solid) and the smallest (thin), plain backprop in black.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from symexp.claims.plasticity import (ARM_BREAKING, LINEAR, RL, SCR, arm_exposure, cell, per_member,  # noqa: E402
                                      plane_units)
from symexp.metrics import names  # noqa: E402
from symexp.plots import save  # noqa: E402

COLORS = {"plain": "k", "L2": "C3", "syre": "C0", "L2-Init": "C2"}
MARKERS = {"L2": "o", "syre": "s", "L2-Init": "^"}  # open markers: arms that overlap (at 0) stay visible


def arms(table: pd.DataFrame, experiment: str) -> list[tuple[str, str, float, float]]:
    """(arm, breaking, wd, line width) for every arm the table holds: the largest and smallest wd of each."""
    t = table[table.experiment == experiment]
    wds = sorted(w for w in t.weight_decay.unique() if w > 0)
    out = [("plain", "none", 0.0, 2.0)] if ((t.breaking == "none") & (t.weight_decay == 0)).any() else []
    for arm, brk in ARM_BREAKING.items():
        out += [(arm, brk, wd, 2.0 if wd == wds[-1] else 0.8) for wd in sorted(set(wds[:1] + wds[-1:]))
                if ((t.breaking == brk) & (t.weight_decay == wd)).any()]
    return out


def _label(arm: str, wd: float) -> str:
    return arm + (f", wd {wd:g}" if wd else "")


def _curves(ax, table, experiment, metric, ylabel, title, xscale, layer=""):
    for arm, brk, wd, lw in arms(table, experiment):
        s = per_member(cell(table, experiment, brk, wd), metric, layer).mean(axis=1)
        s = s[s.index > 0]
        ax.plot(s.index * xscale, s.values, color=COLORS[arm], lw=lw, label=_label(arm, wd))
    ax.set(ylabel=ylabel, title=title)
    ax.legend(fontsize=6)


def _plain_measures(ax, table):
    t, right = cell(table, SCR, "none", 0.0), ax.twinx()
    for axis, metric, style, label in ((ax, names.SILENT_TASK, "C1", "units silent on the window's pattern"),
                                       (ax, names.DEAD_UNITS, "C4", "units dead on every probe input"),
                                       (right, names.ZERO_FRACTION, "C0--", "per-example zero fraction (LoP)"),
                                       (right, names.NORM_RATIO_MIN, "C2--", "smallest |unit| / |unit at init|")):
        s = per_member(t, metric, "hidden1").mean(axis=1)
        s = s[s.index > 0]
        axis.plot(s.index * 1e-3, s.values, style, label=label)
    ax.set(ylabel="units (seed mean)", title="(b) SCR, plain: unit measures of the hidden layer")
    right.set_ylabel("fraction / ratio (dashed)")
    lines = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    ax.legend(lines, [line.get_label() for line in lines], fontsize=6)


def _planes_vs_exposure(ax, table, experiment, title):
    t = table[table.experiment == experiment]
    for arm, brk in ARM_BREAKING.items():
        pts = [(arm_exposure(table, experiment, wd), plane_units(table, experiment, brk, wd))
               for wd in sorted(t[(t.breaking == brk) & (t.weight_decay > 0)].weight_decay.unique())]
        if pts:
            ax.plot(*zip(*pts), marker=MARKERS[arm], fillstyle="none", ms=9, color=COLORS[arm], label=arm)
    ax.set(xscale="log", xlabel="eta * wd * T", ylabel="zero-plane units at the end (seed mean)", title=title)
    ax.legend(fontsize=6)


def draw(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    scr, rl = (table[table.experiment == e] for e in (SCR, RL))
    if len(scr):
        _curves(axes[0, 0], table, SCR, names.LOSS_ONLINE, "online squared error (window mean)",
                "(a) SCR: error per window", 1e-3)
        if (table.experiment == LINEAR).any():
            lin = per_member(table[table.experiment == LINEAR], names.LOSS_ONLINE).mean(axis=1)
            axes[0, 0].plot(lin.index * 1e-3, lin.values, color="0.5", ls="--", label="linear learner")
            axes[0, 0].legend(fontsize=6)
        _plain_measures(axes[0, 1], table)
        for ax in axes[0, :2]:
            ax.set_xlabel("examples seen (thousands)")
        _planes_vs_exposure(axes[0, 2], table, SCR, "(c) SCR: zero-plane units against exposure")
    else:
        for ax in axes[0]:
            ax.set_axis_off()
    if len(rl):
        spt = int(rl[rl.step > 0].step.min())  # one evaluation per task
        _curves(axes[1, 0], table, RL, names.ACC_TRAIN, "training accuracy at the task's end",
                "(d) random labels: accuracy per task", 1 / spt)
        _curves(axes[1, 1], table, RL, names.DEAD_UNITS, "dead units (all hidden layers)",
                "(e) random labels: dead units", 1 / spt, layer=None)
        for ax in axes[1, :2]:
            ax.set_xlabel("task")
        _planes_vs_exposure(axes[1, 2], table, RL, "(f) random labels: zero-plane units against exposure")
    else:
        for ax in axes[1]:
            ax.set_axis_off()
    fig.suptitle("Loss of plasticity: plain backprop, + L2, + syre (symmetry removal), + L2-Init (seed means)")
    return save(fig, out_dir, "plasticity")
