"""Closed-form references the experiments are checked against (paper.md 2.5, 3).

Conventions: the data loss is the plain mean squared error, weight decay is torch's coupled
wd (loss + wd/2 |raw|^2), gamma = wd/2.
  * u * v with L2 gamma on (u, v)  ==  mean sq. error + 2 gamma |w|_1  ==  sklearn Lasso(alpha=gamma)
  * plain w with L2 gamma           ==  ridge: (X'X/n + gamma I) w = X'y/n
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso

from symexp.components import Parts
from symexp.data import TensorData
from symexp.errors import ConfigError


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
    x, y = data.truth.x64.numpy(), data.truth.y64.numpy()
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
    target = data.truth.target_sv  # [k] singular values of the least-squares map, descending
    ref = (target[None, :] - torch.tensor(gammas, dtype=torch.float64)[:, None]).clamp_min(0.0)  # [M, k]
    sv = torch.linalg.svdvals(theta.detach().double().cpu())  # [M, k]
    diff = (sv - ref).abs().amax(1)
    out = {f"ref/spectrum/sv{i}": r for i, r in enumerate(ref.unbind(1))}
    out["ref/spectrum/max_abs_diff"] = diff
    out["ref/spectrum/max_rel_diff"] = diff / target[0]
    out[f"ref/spectrum/rank@{tau:g}"] = (ref > tau * ref[:, :1]).sum(1).double()
    return out


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

    x, y = data.truth.x64, data.truth.y64
    gamma_star = dcs_threshold(x, y, basis(x.shape[1], spec["k"], spec["seed"]))
    g = torch.tensor(gammas, dtype=torch.float64)
    return {"ref/dcs/threshold": torch.full_like(g, gamma_star), "ref/dcs/exact": (g > gamma_star).double()}


# ---------------------------------------------------------------- Theorem 1 on the tanh net (rows T2, T3)
LYAPUNOV_BATCHES = 20_000  # at least this many minibatches estimate E_B (whole epochs, fixed seed below)
LYAPUNOV_SEED = 4_000_037


def breaking_gamma_star(hess0: torch.Tensor, o: torch.Tensor) -> float:
    """gamma* = max(0, -1/2 lambda_min(O^T H0 O)) (paper.md 2.2): above it the symmetric point is a local
    minimum of loss + gamma |theta|^2 along the breaking directions O [p, k]; H0 [p, p] is the data
    loss's Hessian there."""
    return max(0.0, -0.5 * float(torch.linalg.eigvalsh(o.T @ hess0 @ o)[0]))


def dead_unit_gamma_stars(x: torch.Tensor, y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """gamma*_i = |E[x r_-i]| per unit of a tanh net theta [..., h, 1 + d] (x [n, d], y [n]) -> [..., h].

    r_-i = y - sum_{j != i} u_j tanh(w_j . x) is what the other units leave unexplained. At
    (u_i, w_i) = 0 unit i's breaking block of the Hessian of mean (f - y)^2 is
    [[0, -2 E[x r_-i]^T], [-2 E[x r_-i], 0]] with eigenvalues +-2 |E[x r_-i]|, so by
    `breaking_gamma_star` a dead unit i is locally stable iff gamma > gamma*_i (paper.md 2.3)."""
    per_unit = torch.tanh(x @ theta[..., 1:].transpose(-1, -2)) * theta[..., None, :, 0]  # [..., n, h]
    rest = y[:, None] - (per_unit.sum(-1, keepdim=True) - per_unit)  # [..., n, h]: r_-i in column i
    return torch.linalg.vector_norm(x.T @ rest / x.shape[0], dim=-2)


def critical_reference(data, theta: torch.Tensor, gammas: list[float]) -> dict:
    """gamma* of the dead net (|E[x y]|, the same for every member) and each unit's gamma*_i at the final
    weights theta [M, h, 1 + d] (`dead_unit_gamma_stars`) -> {name: [M]}."""
    x, y = data.truth.x64, data.truth.y64
    stars = dead_unit_gamma_stars(x, y, theta.detach().double().cpu())  # [M, h]
    out = {"ref/critical/gamma_star": torch.full((len(gammas),), data.truth.gamma_star, dtype=torch.float64)}
    out.update({f"ref/critical/unit{i}": s for i, s in enumerate(stars.unbind(1))})
    return out


def batch_curvatures(x: torch.Tensor, y: torch.Tensor, batch_size: int | None,
                     n_batches: int = LYAPUNOV_BATCHES, seed: int = LYAPUNOV_SEED) -> torch.Tensor:
    """Curvatures h_B [n_batches] of a one-unit tanh net's minibatch loss at its dead point (u, w) = 0.

    Batches are drawn as the engine draws them (symexp.batcher.Batcher): each epoch is a random
    permutation cut into n // B disjoint batches, so the batches of an epoch average to the full-batch
    curvature exactly and E_B[h_B] carries no sampling error. Each minibatch Hessian
    (torch.func.hessian of symexp.models.tanh_net.mse) is read along v, the eigenvector of the full-batch
    Hessian's most negative eigenvalue: h_B = v^T H_B v. This is the paper's diagonal approximation
    (paper.md 2.4); for d = 1 every block [[0, -2 c_B], [-2 c_B, 0]] shares v, so it is exact.
    batch_size None (full batch) gives the one noiseless curvature."""
    from torch.func import hessian, vmap

    from symexp.models.tanh_net import mse

    n, p = x.shape[0], 1 + x.shape[1]
    curvature = hessian(lambda t, xb, yb: mse(t.reshape(1, p), xb, yb))
    zero = torch.zeros(p, dtype=torch.float64)
    full = curvature(zero, x, y)
    v = torch.linalg.eigh(full)[1][:, 0]
    if batch_size is None:
        return (v @ full @ v).reshape(1)
    gen = torch.Generator().manual_seed(seed)
    per_epoch = n // batch_size
    epochs = -(-n_batches // per_epoch)
    idx = torch.cat([torch.randperm(n, generator=gen)[:per_epoch * batch_size].view(per_epoch, batch_size)
                     for _ in range(epochs)])
    hess = vmap(curvature, in_dims=(None, 0, 0))(zero, x[idx], y[idx])  # [N, p, p]
    return hess @ v @ v


def lyapunov_exponent(h: torch.Tensor, eta: float, gamma: float = 0.0) -> float:
    """Lambda = E_B log|1 - eta (h_B + 2 gamma)| (paper.md 2.4): the linearised breaking component
    s_{t+1} = (1 - eta (h_t + 2 gamma)) s_t goes to 0 in probability iff Lambda < 0."""
    return float(torch.log((1 - eta * (h + 2 * gamma)).abs()).mean())


def eta_star(h: torch.Tensor, gamma: float = 0.0) -> float:
    """The second-order threshold: expanding Lambda to O(eta^2), collapse iff
    E[h] + 2 gamma + (eta / 2) E[(h + 2 gamma)^2] > 0, i.e. eta > eta* = -2 (E[h] + 2 gamma) / E[(h + 2 gamma)^2]
    (= 2 |E h| / E[h^2] at gamma = 0). 0 when the point is already stable in expectation."""
    shifted = h + 2 * gamma
    return max(0.0, float(-2 * shifted.mean() / shifted.pow(2).mean()))


def lyapunov_window(h: torch.Tensor, gamma: float = 0.0, lo: float = 1e-4, hi: float = 1e2) -> tuple[float, float]:
    """(eta_lo, eta_hi): the first interval of eta in [lo, hi] where Lambda(eta) < 0, each edge refined by
    bisection on log eta; (nan, nan) if Lambda never turns negative there. A saddle (E h + 2 gamma < 0)
    has Lambda > 0 at small eta, so eta_lo is the noise-driven collapse threshold and eta_hi where
    too large a step destabilises the point again; a minimum in expectation has eta_lo = lo."""
    grid = np.geomspace(lo, hi, 600)
    neg = [lyapunov_exponent(h, eta, gamma) < 0 for eta in grid]
    if not any(neg):
        return float("nan"), float("nan")
    first = neg.index(True)
    last = first + (neg[first:].index(False) if False in neg[first:] else len(grid) - first)

    def edge(a: float, b: float, negative_at_b: bool) -> float:
        for _ in range(60):
            mid = float(np.sqrt(a * b))
            a, b = (a, mid) if (lyapunov_exponent(h, mid, gamma) < 0) == negative_at_b else (mid, b)
        return float(np.sqrt(a * b))

    eta_lo = grid[0] if first == 0 else edge(grid[first - 1], grid[first], True)
    eta_hi = grid[-1] if last == len(grid) else edge(grid[last - 1], grid[last], False)
    return eta_lo, eta_hi


def lyapunov_reference(data, gammas: list[float], lrs: list[float], batch_size: int | None) -> dict:
    """Per member (its lr, gamma and the job's batch size): Lambda at its lr, the window edges and eta*,
    from the curvatures of the model's own minibatch Hessians at the dead point -> {name: [M]}."""
    h = batch_curvatures(data.truth.x64, data.truth.y64, batch_size)
    windows = {g: lyapunov_window(h, g) for g in set(gammas)}
    col = lambda f: torch.tensor([f(lr, g) for lr, g in zip(lrs, gammas)], dtype=torch.float64)  # noqa: E731
    return {"ref/lyapunov/exponent": col(lambda lr, g: lyapunov_exponent(h, lr, g)),
            "ref/lyapunov/eta_lo": col(lambda lr, g: windows[g][0]),
            "ref/lyapunov/eta_hi": col(lambda lr, g: windows[g][1]),
            "ref/lyapunov/eta_star": col(lambda lr, g: eta_star(h, g)),
            "ref/lyapunov/mean_h": col(lambda lr, g: float(h.mean())),
            "ref/lyapunov/mean_h2": col(lambda lr, g: float(h.pow(2).mean()))}


@dataclass(frozen=True)
class Final:
    """What a reference reads at the end of a job."""

    data: TensorData
    theta: torch.Tensor  # the final effective weight, [M, ...]
    gammas: list[float]  # per member
    lrs: list[float]  # per member
    batch_size: int | None  # the job's (None = full batch)
    metrics: dict  # the `metrics` config (thresholds)


@dataclass(frozen=True)
class Reference:
    """A closed form checked at the end of a job: `compute(final) -> {metric name: [M]}`; `fits(parts)`
    says whether the job's components carry what it needs (`needs`, for the one-line error)."""

    compute: Callable[[Final], dict]
    fits: Callable[[Parts], bool]
    needs: str

    def check(self, parts: Parts, c: dict) -> None:
        if not self.fits(parts):
            name = next(k for k, v in REFERENCES.items() if v is self)
            raise ConfigError(f"references: {name} needs {self.needs}; this job has data={parts.data.name}, "
                              f"model={parts.model.name}")


def _kind(kind: str) -> Callable[[Parts], bool]:
    return lambda parts: getattr(parts.data, "kind", None) == kind


TANH_NET = "its model: critical and lyapunov are closed forms of model tanh_net (data=tanh_teacher)"


def _tanh_net(parts: Parts) -> bool:
    return getattr(parts.model, "name", None) == "tanh_net" and _kind("vector")(parts)


REFERENCES: dict[str, Reference] = {
    "lasso": Reference(lambda f: regression_reference("lasso", f.data, f.theta, f.gammas, f.metrics["sparsity_tau"]),
                       _kind("vector"), "synthetic vector regression data (data=regression)"),
    "ridge": Reference(lambda f: regression_reference("ridge", f.data, f.theta, f.gammas, f.metrics["sparsity_tau"]),
                       _kind("vector"), "synthetic vector regression data (data=regression)"),
    "spectrum": Reference(lambda f: spectrum_reference(f.data, f.theta, f.gammas, f.metrics["rank_tau"]),
                          _kind("matrix"), "a synthetic linear map (data=lowrank_map)"),
    "dcs": Reference(lambda f: dcs_reference(f.data, f.gammas, f.metrics["constraint"]),
                     _kind("vector"), "synthetic vector regression data (data=regression)"),
    "critical": Reference(lambda f: critical_reference(f.data, f.theta, f.gammas), _tanh_net, TANH_NET),
    "lyapunov": Reference(lambda f: lyapunov_reference(f.data, f.gammas, f.lrs, f.batch_size), _tanh_net, TANH_NET),
}
