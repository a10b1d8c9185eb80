"""Closed-form references the experiments are checked against (paper.md 2.5, 3).

Conventions: the data loss is the plain mean squared error, weight decay is torch's coupled
wd (loss + wd/2 |raw|^2), gamma = wd/2.
  * u * v with L2 gamma on (u, v)  ==  mean sq. error + 2 gamma |w|_1  ==  sklearn Lasso(alpha=gamma)
  * plain w with L2 gamma           ==  ridge: (X'X/n + gamma I) w = X'y/n
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso


def lasso(x: np.ndarray, y: np.ndarray, gamma: float) -> np.ndarray:
    """argmin_w mean((y - x w)^2) + 2 gamma |w|_1, in float64 (least squares at gamma = 0)."""
    if gamma == 0:
        return np.linalg.lstsq(x, y, rcond=None)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # an unconverged reference is no reference
        fit = Lasso(alpha=gamma, fit_intercept=False, tol=1e-12, max_iter=1_000_000).fit(x, y)
    return fit.coef_


def ridge(x: np.ndarray, y: np.ndarray, gamma: float) -> np.ndarray:
    """argmin_w mean((y - x w)^2) + gamma |w|^2."""
    n, d = x.shape
    return np.linalg.solve(x.T @ x / n + gamma * np.eye(d), x.T @ y / n)


def support_mismatch(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """Coordinates that are 'zero' (|.| < tau * max|.|) in one of a, b `[M, d]` but not the other -> [M]."""
    za = a.abs() < tau * a.abs().amax(1, keepdim=True)
    zb = b.abs() < tau * b.abs().amax(1, keepdim=True)
    return (za != zb).sum(1).double()


def regression_reference(kind: str, data, theta: torch.Tensor, gammas: list[float], taus: list[float]) -> dict:
    """Metrics of the final weights `[M, d]` against the closed form `kind` (lasso | ridge) -> {name: [M]}."""
    solve = {"lasso": lasso, "ridge": ridge}[kind]
    x, y = data.extras["x64"].numpy(), data.extras["y64"].numpy()
    cache = {g: solve(x, y, g) for g in sorted(set(gammas))}
    ref = torch.tensor(np.stack([cache[g] for g in gammas]))
    theta = theta.detach().double().cpu()
    out = {f"ref/{kind}/max_abs_diff": (theta - ref).abs().amax(1)}
    for tau in taus:
        out[f"ref/{kind}/frac_zero@{tau:g}"] = (ref.abs() < tau * ref.abs().amax(1, keepdim=True)).double().mean(1)
        out[f"ref/{kind}/support_mismatch@{tau:g}"] = support_mismatch(theta, ref, tau)
    return out


def spectrum_reference(data, theta: torch.Tensor, gammas: list[float], tau: float) -> dict:
    """Final W = U V `[M, out, in]` against sigma_i(U V*) = (sigma_i(M_hat) - gamma)_+ -> {name: [M]}.

    The minimiser of |U V - M_hat|_F^2 + gamma (|U|^2 + |V|^2): at balance the penalty is
    2 gamma |W|_* and its prox soft-thresholds the singular values by gamma. It is the loss of
    data=lowrank_map (whitened sample, squared error summed over outputs; symexp.data.synthetic).
    Errors are absolute and relative to sigma_1(M_hat); ranks count sigma_i > tau * sigma_1.
    """
    target = data.extras["target_sv"]  # [k] singular values of the least-squares map, descending
    ref = (target[None, :] - torch.tensor(gammas, dtype=torch.float64)[:, None]).clamp_min(0.0)  # [M, k]
    sv = torch.linalg.svdvals(theta.detach().double().cpu())  # [M, k]
    diff = (sv - ref).abs().amax(1)
    out = {f"ref/spectrum/sv{i}": r for i, r in enumerate(ref.unbind(1))}
    out["ref/spectrum/max_abs_diff"] = diff
    out["ref/spectrum/max_rel_diff"] = diff / target[0]
    out[f"ref/spectrum/rank@{tau:g}"] = (ref > tau * ref[:, :1]).sum(1).double()
    return out


def reference(kind: str, data, theta: torch.Tensor, gammas: list[float], mcfg: dict) -> dict:
    """The closed form `kind` (symexp.config.REFERENCES) of the final weight -> {metric name: [M]}."""
    if kind == "spectrum":
        return spectrum_reference(data, theta, gammas, mcfg["rank_tau"])
    if kind == "dcs":
        return dcs_reference(data, gammas, mcfg["constraint"])
    return regression_reference(kind, data, theta, gammas, mcfg["sparsity_tau"])


def dcs_threshold(x: torch.Tensor, y: torch.Tensor, o: torch.Tensor) -> float:
    """gamma* above which DCS makes O^T theta exactly 0 in linear regression (float64, x [n, p], y [n], O [p, k]).

    DCS: theta = (I - O O^T) w + O (a * b), data loss L = mean((y - x theta)^2), L2 gamma on all of
    (w, a, b) (gamma = wd/2). Minimising the penalty at fixed theta = theta_perp + O s gives
    w = theta_perp and |a_i| = |b_i|, i.e. the convex problem

        L(theta_perp + O s) + gamma |theta_perp|^2 + 2 gamma |s|_1     (theta_perp in ker O^T).

    Like the Lasso, s = 0 is optimal iff theta_perp is the ridge solution on ker O^T and every
    |dL/ds_i| = 2 |o_i^T E[x r]| <= 2 gamma, with r = y - x theta_perp its residual:

        s = 0  <=>  g(gamma) := max_i |o_i^T E[x r_gamma]| <= gamma.

    With Q an orthonormal basis of ker O^T, S = x^T x / n, c = x^T y / n:
    theta_perp = Q (Q^T S Q + gamma I)^-1 Q^T c, so g(gamma) = |O^T c - O^T S Q (Q^T S Q + gamma I)^-1 Q^T c|_inf
    in closed form (one eigendecomposition). gamma* is the largest root of g(gamma) = gamma (0 if
    g(0) <= 0 never crosses): the constraint is exact for every gamma > gamma*. Since
    g(gamma) <= |O^T c|_inf + |O^T S Q| |Q^T c| / gamma, the root lies below
    |O^T c|_inf + sqrt(|O^T S Q| |Q^T c|); it is found on a grid and refined by bisection.
    """
    n, k = x.shape[0], o.shape[1]
    s, c = x.T @ x / n, x.T @ y / n
    q = torch.linalg.qr(o, mode="complete")[0][:, k:]  # [p, p - k], orthonormal, Q^T O = 0
    e, v = torch.linalg.eigh(q.T @ s @ q)
    u, a, otc = v.T @ q.T @ c, o.T @ s @ q @ v, o.T @ c

    def excess(gamma: float) -> float:  # g(gamma) - gamma
        return float((otc - a @ (u / (e + gamma))).abs().max()) - gamma

    hi = float(otc.abs().max() + (torch.linalg.matrix_norm(a, 2) * u.norm()).sqrt()) + 1e-12
    grid = np.linspace(0.0, hi, 2001)
    above = [i for i, gam in enumerate(grid) if excess(gam) >= 0]
    if not above:
        return 0.0
    lo, hi = grid[above[-1]], grid[above[-1] + 1]
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess(mid) >= 0 else (lo, mid)
    return 0.5 * (lo + hi)


def dcs_reference(data, gammas: list[float], spec: dict) -> dict:
    """The predicted DCS threshold gamma* (same for every member) and whether gamma > gamma* -> {name: [M]}.

    O is the `metrics.constraint` basis (k, seed) of the weight's size (symexp.symmetry.dcs.basis)."""
    from symexp.symmetry.dcs import basis

    x, y = data.extras["x64"], data.extras["y64"]
    gamma_star = dcs_threshold(x, y, basis(x.shape[1], spec["k"], spec["seed"]))
    g = torch.tensor(gammas, dtype=torch.float64)
    return {"ref/dcs/threshold": torch.full_like(g, gamma_star), "ref/dcs/exact": (g > gamma_star).double()}
