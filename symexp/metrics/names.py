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


# ---- continual learning, neural and posterior collapse (issue 17; symexp.evaluation) -------------
LOSS_ONLINE = "loss/online"  # mean loss of each training batch before its step, over the eval window
LOSS_PROBE = "loss/probe"  # regression streams: error on the fixed probe set
ACC_TRAIN = "acc/train"
DEAD_UNITS = "plasticity/dead_units"  # units with activation exactly 0 on every probe example (LoP)
FEATURE_ERANK = "plasticity/erank"  # effective rank of a hidden layer's probe features (LoP)
WEIGHT_MAGNITUDE = "plasticity/weight_mean_abs"  # mean |W| of a layer's weight (LoP's SCR log)
NC1, NC3, NC4 = "collapse/nc1", "collapse/nc3", "collapse/nc4_agreement"
EQUINORM, MEAN_COS, EQUIANGULARITY, ETF_ERROR = ("collapse/equinorm", "collapse/mean_cos",
                                                 "collapse/equiangularity", "collapse/etf_error")
POSTERIOR_LOSS_GAP = "posterior/loss_gap"  # the beta-VAE loss minus its closed-form optimum


def zero_plane(tau: float) -> str:
    """Hidden units whose whole vector (in, bias, out) is <= tau x the layer's mean unit norm at init."""
    return f"mirror/zero_plane@{tau:g}"


def duplicates(tol: float) -> str:
    """Live hidden units that duplicate another (unit_tol), the permutation mirror plane."""
    return f"mirror/duplicate@{tol:g}"


def feature_rank(tau: float) -> str:
    """tau-rank of the centred penultimate features (C - 1 at full collapse)."""
    return f"collapse/feature_rank@{tau:g}"


def active_latents(kl: float) -> str:
    """Latents whose expected KL(q(z_j|x) || p(z_j)) exceeds `kl` nats; ref('posterior', ...) is the closed form."""
    return f"posterior/active@{kl:g}"


def ref_active_latents(kl: float) -> str:
    """The closed-form count beside active_latents(kl): #{j <= k : lambda_j > beta eta^2}."""
    return ref("posterior", active_latents(kl).split("/", 1)[1])


def beta_layer(beta: float) -> str:
    """The `layer` of a linear-VAE block trained at this beta."""
    return f"beta@{beta:g}"


def layer_beta(layer: str) -> float | None:
    """beta of a beta_layer name, None for any other layer."""
    return float(layer.split("@", 1)[1]) if layer.startswith("beta@") else None
