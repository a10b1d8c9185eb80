"""NC (paper.md 6, neural collapse): with weight decay, the last layers' rotation and permutation
symmetries favour low-rank, homogeneous penultimate features: class-mean collapse (NC1 falls with weight
decay) and a feature rank that falls towards C - 1. Removing the symmetry (syre) is measured beside it.

All values are seed means at the last step, on the training features (symexp.evaluation.neural_collapse). Every
threshold was fixed before the first full quick run (from the protocol note) and is disclosed as such.
"""
from __future__ import annotations

import pandas as pd

from symexp.claims import Check, final, has, select
from symexp.evaluation.neural_collapse import FEATURE_RANK_TAU as RANK_TAU
from symexp.metrics import names

EXPERIMENT = "neural_collapse"
RANK = names.feature_rank(RANK_TAU)
CLASSES = 10
RHO, RATIO = -0.8, 0.1  # Spearman(wd, NC1) over wd > 0; NC1 at the largest wd / at wd 0
TPT_STEP = 1000  # the terminal phase: every member at 100 % training accuracy from this step on
FIXED = " [threshold fixed before the first full run]"


def by_wd(table: pd.DataFrame, metric: str, breaking: str) -> pd.Series:
    """Seed-mean value of `metric` at the last step, indexed by weight decay."""
    t = select(final(table[table.experiment == EXPERIMENT]), EXPERIMENT, metric)
    return t[t.breaking == breaking].groupby("weight_decay").value.mean()


def nc1_trend(table: pd.DataFrame) -> float:
    s = by_wd(table, names.NC1, "none")
    s = s[s.index > 0]
    return float(pd.Series(s.index, dtype=float).corr(pd.Series(s.to_numpy()), method="spearman"))


def nc1_ratio(table: pd.DataFrame) -> float:
    s = by_wd(table, names.NC1, "none")
    return float(s.iloc[-1] / s.iloc[0])


def in_terminal_phase(table: pd.DataFrame) -> float:
    """Fraction of members (every arm) at 100 % training accuracy at every evaluation from TPT_STEP on."""
    t = select(table[table.experiment == EXPERIMENT], EXPERIMENT, names.ACC_TRAIN)
    late = t[t.step >= TPT_STEP].groupby(["job", "member"]).value.min()
    return float((late >= 1.0).mean())


def syre_over_plain(table: pd.DataFrame, metric: str, ratio: bool) -> float:
    """syre vs plain at the largest weight decay: the ratio (or the difference) of the seed means."""
    a, b = by_wd(table, metric, "syre").iloc[-1], by_wd(table, metric, "none").iloc[-1]
    return float(a / b if ratio else a - b)


def _values(metric: str, breaking: str = "none"):
    return lambda t: ", ".join(f"wd {w:g}: {v:.3g}" for w, v in by_wd(t, metric, breaking).items())


PLAIN, SYRE = has(EXPERIMENT, breaking="none"), has(EXPERIMENT, breaking="syre")
CHECKS = [
    Check("NC0", "terminal_phase", "informational", f"fraction of members at 100 % training accuracy at every "
          f"evaluation from step {TPT_STEP} on (the terminal phase NC is defined in)" + FIXED,
          in_terminal_phase, 1.0, ">=", has(EXPERIMENT)),
    Check("NC1", "decreasing_in_wd", "paper", "plain: Spearman rho of (wd, NC1) over wd > 0 (NC1 falls with weight "
          "decay)" + FIXED, nc1_trend, RHO, "<=", PLAIN, _values(names.NC1)),
    Check("NC1", "ratio", "paper", "plain: NC1 at the largest wd / NC1 at wd = 0" + FIXED, nc1_ratio, RATIO, "<", PLAIN),
    Check("NC2", "rank_bound", "paper", f"plain: centred penultimate feature rank (tau {RANK_TAU:g}) at the largest wd, "
          f"against 2 (C - 1) = {2 * (CLASSES - 1)}" + FIXED, lambda t: by_wd(t, RANK, "none").iloc[-1],
          2 * (CLASSES - 1), "<=", PLAIN, _values(RANK)),
    Check("NC2", "rank_falls", "paper", "plain: feature rank at the largest wd minus at wd = 0" + FIXED,
          lambda t: by_wd(t, RANK, "none").iloc[-1] - by_wd(t, RANK, "none").iloc[0], 0.0, "<", PLAIN),
    Check("NC5", "syre_nc1", "informational", "our reading of paper.md 6: less collapse without the mirror plane "
          "through 0: NC1 of syre / plain at the largest wd" + FIXED, lambda t: syre_over_plain(t, names.NC1, True),
          1.0, ">", SYRE, _values(names.NC1, "syre")),
    Check("NC5", "syre_rank", "informational", "same reading: feature rank of syre minus plain at the largest wd"
          + FIXED, lambda t: syre_over_plain(t, RANK, False), 0.0, ">", SYRE, _values(RANK, "syre")),
]
