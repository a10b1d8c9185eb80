"""Metric names of the tidy table: the one place they are spelled.

The engine writes rows under these names and claims read them back through the same functions, so
a threshold set in config (e.g. `metrics.rank_tau`) names the same column on both sides.
"""
from __future__ import annotations

LOSS_TRAIN, LOSS_TEST, ACC_TEST = "loss/train", "loss/test", "acc/test"
ALIVE, DIVERGED = "status/alive", "status/diverged"
L1_L2 = "sparsity/l1_l2"
INDEPENDENT_UNITS, DEAD_FRAC = "units/independent", "units/dead_frac"
NORM = "norm/l2"
CONSTRAINT = "constraint/norm"


def _floor(atol: float) -> str:
    return f",atol@{atol:g}" if atol > 0 else ""


def frac_zero(tau: float) -> str:
    """Fraction of |theta_i| < tau * max|theta| (symexp.metrics.sparsity)."""
    return f"sparsity/frac_zero@{tau:g}"


def tau_rank(tau: float, atol: float = 0.0) -> str:
    return f"rank/tau@{tau:g}{_floor(atol)}"


def erank(atol: float = 0.0) -> str:
    return f"rank/erank{_floor(atol)}"


def stable_rank(atol: float = 0.0) -> str:
    return f"rank/stable{_floor(atol)}"


def energy_rank(energy: float, atol: float = 0.0) -> str:
    return f"rank/energy@{energy:g}{_floor(atol)}"


def singular_value(i: int) -> str:
    return f"spectrum/sv{i}"


def near_identical(threshold: float) -> str:
    return f"features/near_identical@{threshold:g}"


def corr(i: int, j: int) -> str:
    return f"corr/{i}/{j}"


def ref(kind: str, metric: str) -> str:
    """A closed-form reference computed at the end of a job (symexp.theory), e.g. ref('lasso', frac_zero(1e-3))."""
    return f"ref/{kind}/{metric.split('/', 1)[-1] if metric.startswith('sparsity/') else metric}"


# Leaves of the closed-form references, spelled ref(kind, leaf) (symexp.theory writes them).
MAX_ABS_DIFF, MAX_REL_DIFF = "max_abs_diff", "max_rel_diff"
DCS_THRESHOLD, GAMMA_STAR = "threshold", "gamma_star"
LYAPUNOV_EXPONENT, ETA_LO, ETA_HI, ETA_STAR = "exponent", "eta_lo", "eta_hi", "eta_star"


def support_mismatch(tau: float) -> str:
    """Coordinates where |theta_i| < tau * max|theta| disagrees with the reference's zero pattern."""
    return f"support_mismatch@{tau:g}"


def spectrum_rank(tau: float) -> str:
    """Leaf of ref('spectrum', ...): the tau-rank of the exact soft-thresholded spectrum."""
    return f"rank@{tau:g}"


def ref_singular_value(i: int) -> str:
    """The exact (sigma_i(M_hat) - gamma)_+ beside singular_value(i)."""
    return ref("spectrum", singular_value(i).split("/", 1)[1])


def unit_gamma_star(i: int) -> str:
    """Leaf of ref('critical', ...): unit i's own critical weight decay |E[x r_-i]|."""
    return f"unit{i}"


def unfloored(metric: str) -> str:
    """`metric` without its ',atol@<a>' floor suffix (the name the same rank has without a floor)."""
    return metric.split(",atol@", 1)[0]


def corr_pair(metric: str) -> tuple[int, int] | None:
    """(i, j) of a corr(i, j) name, None for any other metric."""
    parts = metric.split("/")
    return (int(parts[1]), int(parts[2])) if len(parts) == 3 and parts[0] == "corr" else None
