"""Closed forms of Theorem 1 on the tanh net (paper.md 2.2-2.4): gamma* of a dead unit, the Lyapunov
exponent, its window and the second-order eta* — on cases with known answers."""
from __future__ import annotations

import math

import pytest
import torch
from torch.func import hessian

from symexp import theory
from symexp.components import load
from symexp.models.tanh_net import mse


def _whitened(n: int, d: int, seed: int) -> torch.Tensor:
    """x [n, d] with x^T x / n = I exactly."""
    g = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(n, d, generator=g, dtype=torch.float64))[0] * math.sqrt(n)


def _hessian_at(theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    shape = theta.shape
    return hessian(lambda t: mse(t.reshape(shape), x, y))(theta.reshape(-1))


def test_gamma_star_of_a_single_unit_is_the_teacher_norm():
    """y = a . x on whitened x: E[x y] = a, so gamma* = |a| by the formula and by -1/2 lambda_min of the Hessian."""
    x = _whitened(64, 3, 0)
    a = torch.tensor([0.3, -1.2, 0.4], dtype=torch.float64)
    y = x @ a
    zero = torch.zeros(1, 4, dtype=torch.float64)
    assert float(theory.dead_unit_gamma_stars(x, y, zero)[0]) == pytest.approx(float(a.norm()), rel=1e-12)
    o = torch.eye(4, dtype=torch.float64)  # the sign mirror of the only unit: all of (u, w)
    assert theory.breaking_gamma_star(_hessian_at(zero, x, y), o) == pytest.approx(float(a.norm()), rel=1e-10)


def test_gamma_star_of_a_unit_inside_a_live_net_matches_its_hessian_block():
    """gamma*_i = |E[x r_-i]| for each unit zeroed inside a random 3-unit net = -1/2 lambda_min(O_i^T H O_i)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(80, 2, generator=g, dtype=torch.float64)
    y = torch.sin(x[:, 0]) + 0.5 * x[:, 1]
    theta = torch.randn(3, 3, generator=g, dtype=torch.float64)
    for i in range(3):
        dead = theta.clone()
        dead[i] = 0.0
        o = torch.zeros(9, 3, dtype=torch.float64)
        o[3 * i:3 * i + 3] = torch.eye(3, dtype=torch.float64)
        formula = float(theory.dead_unit_gamma_stars(x, y, dead)[i])
        assert formula > 0.05
        assert theory.breaking_gamma_star(_hessian_at(dead, x, y), o) == pytest.approx(formula, rel=1e-10)


def _gd_norm(x: torch.Tensor, y: torch.Tensor, gamma: float, steps: int = 1500, lr: float = 0.2) -> float:
    """Full-batch GD on one tanh unit with coupled L2 gamma (wd = 2 gamma) -> final |(u, w)|."""
    theta = torch.full((1, 1 + x.shape[1]), 0.5, dtype=torch.float64, requires_grad=True)
    for _ in range(steps):
        (g,) = torch.autograd.grad(mse(theta, x, y), theta)
        with torch.no_grad():
            theta -= lr * (g + 2 * gamma * theta)
    return float(theta.detach().norm())


def test_gamma_star_separates_gd_runs_just_above_and_below():
    data = load("data", "tanh_teacher", n_train=128, dim=2, width=2, noise=0.3, xy_norm=0.8, seed=0).build(
                      torch.device("cpu"), torch.float64)
    x, y = data.x, data.y
    star = float(theory.dead_unit_gamma_stars(x, y, torch.zeros(1, 3, dtype=torch.float64))[0])
    assert star == pytest.approx(0.8, rel=1e-12) and data.truth.gamma_star == pytest.approx(0.8, rel=1e-12)
    assert _gd_norm(x, y, 1.05 * star) < 1e-6
    assert _gd_norm(x, y, 0.95 * star) > 1e-2


def test_lyapunov_exponent_window_and_eta_star_on_a_two_point_curvature():
    """h = -1 +- 4 with equal weight: Lambda = (log|1 - 3 eta| + log|1 + 5 eta|) / 2, negative exactly on
    (2/15, (2 + sqrt(124)) / 30); eta* = 2 |E h| / E[h^2] = 2/17."""
    h = torch.tensor([3.0, -5.0], dtype=torch.float64)
    for eta in (0.05, 0.2, 0.5):
        exact = 0.5 * (math.log(abs(1 - 3 * eta)) + math.log(abs(1 + 5 * eta)))
        assert theory.lyapunov_exponent(h, eta) == pytest.approx(exact, rel=1e-12)
    lo, hi = theory.lyapunov_window(h)
    assert lo == pytest.approx(2 / 15, rel=1e-9) and hi == pytest.approx((2 + math.sqrt(124)) / 30, rel=1e-9)
    assert theory.eta_star(h) == pytest.approx(2 / 17, rel=1e-12)
    # weight decay shifts every curvature by 2 gamma: E[h + 1/2] = -1/2, E[(h + 1/2)^2] = 16.25
    assert theory.eta_star(h, gamma=0.25) == pytest.approx(1 / 16.25, rel=1e-12)
    assert theory.eta_star(h, gamma=1.0) == 0.0  # stable in expectation: no noise needed
    # every batch curves downwards: |1 - eta h| > 1 always, no window; every batch curves upwards: open at once
    assert all(math.isnan(v) for v in theory.lyapunov_window(torch.tensor([-1.0, -2.0], dtype=torch.float64)))
    assert theory.lyapunov_window(torch.tensor([1.0, 2.0], dtype=torch.float64), lo=1e-3)[0] == 1e-3


def test_batch_curvatures_of_a_scalar_unit_are_minus_twice_the_batch_mean_of_x_y():
    """d = 1: the minibatch breaking block is [[0, -2 c_B], [-2 c_B, 0]], c_B = mean_B(x y); read along the
    expected unstable direction, h_B = -2 c_B (for E[x y] > 0). Whole epochs make E_B[h_B] exact."""
    data = load("data", "tanh_teacher", n_train=64, dim=1, width=1, noise=3.0, xy_norm=0.25, seed=0).build(
                      torch.device("cpu"), torch.float64)
    x, y = data.truth.x64, data.truth.y64
    xy = x[:, 0] * y
    assert float(xy.mean()) == pytest.approx(0.25, rel=1e-12)
    one = theory.batch_curvatures(x, y, 1, n_batches=64)  # one epoch: every sample once
    assert torch.allclose(one.sort().values, (-2 * xy).sort().values, atol=1e-12)
    four = theory.batch_curvatures(x, y, 4, n_batches=1000)
    assert len(four) >= 1000 and float(four.mean()) == pytest.approx(-0.5, abs=1e-12)
    assert float(four.var()) == pytest.approx(float((2 * xy).var()) / 4, rel=0.15)  # finite-population variance
    assert float(theory.batch_curvatures(x, y, None)[0]) == pytest.approx(-0.5, rel=1e-12)
