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
