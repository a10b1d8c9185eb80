"""T3 (paper.md 2.3-2.4, Eq. 7; the Lyapunov form is our derivation): at gamma = 0 minibatch SGD
collapses a tanh unit onto its dead point, a saddle of the expected loss, once the Lyapunov exponent
Lambda(eta) = E_B log|1 - eta h_B| turns negative; the threshold moves up with the batch size."""
from __future__ import annotations

import numpy as np
import pandas as pd

from symexp.claims import KEYS, Check, final, has, select
from symexp.metrics import names

EXPERIMENT = "theory_noise"
NORM, WHOLE = names.NORM, "weight"  # WHOLE: the probe of all parameters
EXPONENT, ETA_LO, ETA_HI, ETA_STAR = (names.ref("lyapunov", leaf) for leaf in
                                      (names.LYAPUNOV_EXPONENT, names.ETA_LO, names.ETA_HI, names.ETA_STAR))
TAU = 1e-6  # collapsed: |(u, w)| below this at the last step (paper.md 7, row T3)
AGREE = 0.9  # fraction of members whose outcome the Lyapunov prediction must get right
FACTOR = 1.5  # measured threshold within this factor of the prediction (about the eta grid's spacing, 1.44)
ETA_STAR_FACTOR = 2.0  # "qualitatively right": the second-order eta* within this factor of Lambda's edge
BATCHES = (1, 4, 16)  # the sweep's optim.batch_size values


def members(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (B, member): lr, final and initial |theta|, collapsed, Lambda and the window edges."""
    t = table[table.experiment == EXPERIMENT]
    norms = select(t, EXPERIMENT, NORM)
    start = norms[(norms.step == 0) & (norms.layer == WHOLE)].set_index(KEYS)["value"]
    last = final(t)
    refs = [EXPONENT, ETA_LO, ETA_HI, ETA_STAR]
    for metric in refs:
        select(last, EXPERIMENT, metric)
    keep = last[((last.layer == WHOLE) & (last.metric == NORM)) | last.metric.isin(refs)]
    m = keep.pivot_table(index=KEYS + ["batch_size", "lr", "seed"], columns="metric", values="value").reset_index()
    m["s0"] = start.reindex(m.set_index(KEYS).index).to_numpy()
    m["steps"] = last.groupby(KEYS)["step"].max().reindex(m.set_index(KEYS).index).to_numpy()
    m["collapsed"] = m[NORM] < TAU
    m["level"] = np.log(TAU / m.s0) / m.steps  # T * Lambda below log(TAU / |s_0|) reaches TAU in T steps
    m["predicted"] = m[EXPONENT] < m.level
    return m


def _crossing(x: np.ndarray, y: np.ndarray, target: float, rising: bool) -> float:
    """First eta where y crosses `target` (upward if rising), interpolated linearly in log eta; nan if never."""
    for i in range(1, len(x)):
        a, b = y[i - 1] - target, y[i] - target
        if (a < 0 <= b) if rising else (a > 0 >= b):
            f = a / (a - b)
            return float(np.exp(np.log(x[i - 1]) + f * (np.log(x[i]) - np.log(x[i - 1]))))
    return float("nan")


def thresholds(m: pd.DataFrame) -> pd.DataFrame:
    """Per B: measured eta_c (collapsed fraction crossing 1/2), Lambda's finite-time edge eta_T, its
    asymptotic window [eta_lo, eta_hi] and eta*."""
    out = []
    for b, s in m.groupby("batch_size"):
        cell = s.groupby("lr").agg(frac=("collapsed", "mean"), lam=(EXPONENT, "first"), level=("level", "mean"))
        lrs = cell.index.to_numpy()
        out.append(dict(batch_size=b, eta_c=_crossing(lrs, cell.frac.to_numpy(), 0.5, True),
                        eta_T=_crossing(lrs, (cell.lam - cell.level).to_numpy(), 0.0, False),
                        eta_lo=s[ETA_LO].iloc[0], eta_hi=s[ETA_HI].iloc[0], eta_star=s[ETA_STAR].iloc[0]))
    return pd.DataFrame(out).set_index("batch_size")


def _thresholds(table: pd.DataFrame) -> pd.DataFrame:
    return thresholds(members(table))


def _agreement(table: pd.DataFrame, finite: bool) -> float:
    m = members(table)
    return float((m.collapsed == (m.predicted if finite else m[EXPONENT] < 0)).mean())


def _factor(table: pd.DataFrame, b: int) -> float:
    r = _thresholds(table).loc[b]
    return float(max(r.eta_c / r.eta_T, r.eta_T / r.eta_c))


def _eta_star_factor(table: pd.DataFrame) -> float:
    th = _thresholds(table)
    return float(np.maximum(th.eta_star / th.eta_lo, th.eta_lo / th.eta_star).max())


def slowest_rise(table: pd.DataFrame) -> float:
    """min over neighbouring batch sizes of eta_c(B_next) / eta_c(B): > 1 iff eta_c rises at every B
    (NaN when some eta_c was not measured or there is one B)."""
    eta_c = _thresholds(table).eta_c.to_numpy()
    return float(np.min(eta_c[1:] / eta_c[:-1])) if len(eta_c) > 1 else float("nan")


def _describe(table: pd.DataFrame) -> str:
    m = members(table)
    return (f"{len(m)} members: B ∈ {[int(b) for b in sorted(m.batch_size.unique())]}, {m.lr.nunique()} η, "
            f"{m.seed.nunique()} seeds")


def _describe_b(table: pd.DataFrame, b: int) -> str:
    r = _thresholds(table).loc[b]
    return (f"B = {b}: measured η_c = {r.eta_c:.4g}, finite-T edge η_T = {r.eta_T:.4g}, "
            f"asymptotic Λ = 0 at {r.eta_lo:.4g}")


def _describe_trend(table: pd.DataFrame) -> str:
    th = _thresholds(table)
    b0, b1 = int(th.index[0]), int(th.index[-1])
    return (f"η_c per B: {', '.join(f'{v:.4g}' for v in th.eta_c)}; η_c(B={b1}) / η_c(B={b0}) = "
            f"{th.eta_c.iloc[-1] / th.eta_c.iloc[0]:.4g} (predicted {th.eta_lo.iloc[-1] / th.eta_lo.iloc[0]:.3g})")


def _describe_star(table: pd.DataFrame) -> str:
    th = _thresholds(table)
    return (f"η* = {', '.join(f'{v:.4g}' for v in th.eta_star)}; edge = {', '.join(f'{v:.4g}' for v in th.eta_lo)}")


CHECKS = [
    Check("T3", "lyapunov_finite_T", "paper",
          f"T3 (ours, paper.md 2.4): fraction of members whose collapse (‖(u,w)‖ < {TAU:g}) matches "
          "T·Λ(η) < log(τ/‖s₀‖), Λ from the model's own minibatch Hessians",
          lambda t: _agreement(t, finite=True), threshold=AGREE, op=">=", applies=has(EXPERIMENT), detail=_describe),
    Check("T3", "lyapunov_sign", "paper",
          "T3: the same with the asymptotic criterion Λ(η) < 0 (ignores the finite run length)",
          lambda t: _agreement(t, finite=False), threshold=AGREE, op=">=", applies=has(EXPERIMENT)),
    *[Check("T3", f"threshold_B{b}", "paper",
            f"T3: B = {b}: measured η_c vs the Lyapunov finite-T edge η_T: factor apart",
            lambda t, b=b: _factor(t, b), threshold=FACTOR, op="<=", applies=has(EXPERIMENT, batch_size=b),
            detail=lambda t, b=b: _describe_b(t, b)) for b in BATCHES],
    Check("T3", "eta_star_second_order", "paper",
          "T3: the second-order η* = 2|E ĥ|/E[ĥ²] vs the exact edge Λ(η) = 0, worst factor over B",
          _eta_star_factor, threshold=ETA_STAR_FACTOR, op="<=", applies=has(EXPERIMENT), detail=_describe_star),
    Check("T3", "batch_trend", "paper",
          "T3: the threshold grows with B: smallest ratio η_c(B') / η_c(B) of neighbouring batch sizes B < B' "
          "(> 1: η_c rises at every B)",
          slowest_rise, threshold=1.0, op=">", applies=has(EXPERIMENT), detail=_describe_trend),
]
