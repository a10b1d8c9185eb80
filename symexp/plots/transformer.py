"""Transformer (paper.md 4, appendix "transformer"; protocol ours): double rotation -> low-rank
attention (claims C6: symexp.claims.transformer) — from the tidy table alone.

One row per optimiser: Adam + coupled L2 (experiment `transformer`, what the theory covers) and
AdamW's decoupled decay (`transformer_adamw`, outside it; informational). Columns:
(a) final tau-rank of each layer's W_Q^T W_K vs wd, validation loss on a second axis;
(b) final erank of W_Q^T W_K (solid) and W_O W_V (dashed) per layer, and the mean over heads of the
    per-head W_Q,h^T W_K,h erank (dotted), vs wd;
(c) tau-rank of W_Q^T W_K over training (mean over layers), one line per wd.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from symexp.claims import final  # noqa: E402
from symexp.claims.transformer import (  # noqa: E402
    COUPLED, DECOUPLED, LABELS, RAW_ERANK, RAW_RANK, TAU, VAL, curve, floored, head_curve, layers)
from symexp.plots import save  # noqa: E402


def _wd_axis(ax, wds) -> None:
    """Log axis with wd = 0 on it: linear below the smallest nonzero wd."""
    nonzero = [w for w in wds if w > 0]
    ax.set_xscale("symlog", linthresh=min(nonzero) if nonzero else 1.0)
    ax.set_xlabel("weight decay wd")


def _panels(axes, t_end: pd.DataFrame, t_all: pd.DataFrame, exp: str) -> None:
    a, b, c = axes
    found = layers(t_end)
    rank, erank = floored(t_all, RAW_RANK), floored(t_all, RAW_ERANK)
    for i, layer in enumerate(found):
        r = curve(t_end, f"{layer}.qk", rank)
        a.plot(r.index, r.values, marker="o", color=f"C{i}", label=f"{layer}: τ-rank W_QᵀW_K")
        for metric_layer, ls, what in ((f"{layer}.qk", "-", "W_QᵀW_K"), (f"{layer}.ov", "--", "W_O W_V")):
            e = curve(t_end, metric_layer, erank)
            b.plot(e.index, e.values, marker="o", ms=3, ls=ls, color=f"C{i}", label=f"{layer}: {what}")
        h = head_curve(t_end, layer, erank)
        b.plot(h.index, h.values, marker="x", ms=3, ls=":", color=f"C{i}",
               label=f"{layer}: per head W_Q,hᵀW_K,h (mean)")
    val = t_end[t_end.metric == VAL].groupby("weight_decay")["value"].mean()
    twin = a.twinx()
    twin.plot(val.index, val.values, "k--", marker="s", ms=3, label="validation loss")
    twin.set_ylabel("validation loss (nats/char)")
    wds = sorted(t_end.weight_decay.unique())
    for ax in (a, b):
        _wd_axis(ax, wds)
    a.set(ylabel=f"τ-rank (σᵢ > {TAU:g}·σ₁)", title=f"(a) {LABELS[exp]}")
    b.set(ylabel="erank", title="(b) erank of the invariant products")
    lines = a.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    a.legend(lines, [ln.get_label() for ln in lines], fontsize=6)
    b.legend(fontsize=6)
    cmap = plt.get_cmap("viridis")
    qk = t_all[t_all.layer.isin([f"{layer}.qk" for layer in found]) & (t_all.metric == rank)]
    for k, wd in enumerate(wds):
        s = qk[qk.weight_decay == wd].groupby("step")["value"].mean()
        c.plot(s.index, s.values, marker="o", ms=2, color=cmap(k / max(len(wds) - 1, 1)), label=f"wd = {wd:g}")
    c.set(xlabel="step", ylabel="τ-rank of W_QᵀW_K (mean over layers)", title="(c) over training")
    c.legend(fontsize=6)


def draw(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    exps = [e for e in (COUPLED, DECOUPLED) if (table.experiment == e).any()]
    fig, axes = plt.subplots(len(exps), 3, figsize=(16, 4.4 * len(exps)), squeeze=False)
    for row, exp in zip(axes, exps):
        t_all = table[table.experiment == exp]
        _panels(row, final(t_all), t_all, exp)
    fig.suptitle("Double rotation symmetry → low-rank attention: char-level GPT, ranks vs weight decay "
                 "(σ ≤ metrics.rank_atol counts as 0; mean over seeds, final step)")
    return save(fig, out_dir, "transformer")
