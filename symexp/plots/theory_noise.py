"""T3 (paper.md 2.4, our derivation: the paper's Eq. 7 was not seen): at gamma = 0 minibatch SGD collapses a
tanh unit onto its dead point, a saddle of the expected loss, once the Lyapunov exponent
Lambda(eta) = E_B log|1 - eta h_B| turns negative — from the tidy table alone.

(a) fraction of seeds with final |(u, w)| < TAU vs eta, one curve per batch size B, with the window
    edges where Lambda < 0 (dashed) and the second-order eta* = 2|E h| / E[h^2] (dotted);
(b) Lambda(eta) at every member's eta (the `lyapunov` reference, from the model's own minibatch
    Hessians), with the finite-time level log(TAU / |s_0|) / T below which T steps reach TAU;
(c) the thresholds vs B: measured (collapsed fraction crossing 1/2), Lambda's asymptotic and
    finite-time edges, and eta*.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from symexp.claims.theory_noise import EXPONENT, TAU, members, thresholds  # noqa: E402
from symexp.plots import save  # noqa: E402


def draw(table: pd.DataFrame, out_dir: Path) -> list[Path]:
    m = members(table)
    th = thresholds(m)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    for k, (b, s) in enumerate(m.groupby("batch_size")):
        color, cell = f"C{k}", s.groupby("lr")
        axes[0].plot(cell.collapsed.mean(), "o-", ms=3, color=color, label=f"B = {b}")
        for edge in ("eta_lo", "eta_hi"):
            axes[0].axvline(th.loc[b, edge], color=color, ls="--", lw=0.8)
        axes[0].axvline(th.loc[b, "eta_star"], color=color, ls=":", lw=1.2)
        axes[1].plot(cell[EXPONENT].first(), "o-", ms=3, color=color, label=f"Λ(η), B = {b}")
    axes[1].axhline(0.0, color="k", lw=0.8)
    axes[1].axhline(m.level.mean(), color="grey", ls="-.", lw=1, label="log(τ/‖s₀‖)/T (mean over members)")
    axes[0].set(xscale="log", xlabel="learning rate η", ylabel=f"fraction with ‖(u, w)‖ < {TAU:g}",
                title="(a) collapse (dashed: Λ = 0, dotted: η*)")
    axes[1].set(xscale="log", xlabel="learning rate η", ylabel="E log|1 − η ĥ_B|",
                title="(b) Lyapunov exponent from minibatch Hessians")
    axes[1].set_yscale("symlog", linthresh=1e-2)
    bs = th.index.to_numpy()
    axes[2].plot(bs, th.eta_c, "ko", ms=6, label="measured (collapsed fraction = ½)")
    axes[2].plot(bs, th.eta_T, "C2s--", ms=4, label="Λ = log(τ/‖s₀‖)/T (finite T)")
    axes[2].plot(bs, th.eta_lo, "C0^-", ms=4, label="Λ = 0 (T → ∞)")
    axes[2].plot(bs, th.eta_star, "C3v:", ms=4, label="η* = 2|E ĥ| / E[ĥ²]")
    axes[2].set(xscale="log", yscale="log", xlabel="batch size B", ylabel="threshold η",
                title="(c) the threshold moves with B")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.suptitle(f"Noise-driven collapse at γ = 0: one tanh unit (d = 1), {m.seed.nunique()} seeds per η, "
                 f"{int(m.steps.max())} SGD steps from ‖s₀‖ ≈ {m.s0.median():.2g}")
    return save(fig, out_dir, "theory_noise")
