"""DCS (paper.md 5): the reparametrisation, its nn.Linear form, the threshold formula, the experiment."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from conftest import ledger_rows
from symexp.config import ConfigError
from symexp.plots import dcs as dcs_plot
from symexp.run import run_job
from symexp.components import load
from symexp.symmetry.dcs import DCS, basis, register_dcs
from symexp.theory import dcs_threshold

TINY = ["experiment=dcs", "data.n_train=200", "data.dim=20", "train.steps=150", "train.eval_every=150",
        "ensemble.seeds=[0]", "ensemble.weight_decays=[0.2,8.0]"]


def test_basis_is_orthonormal_fixed_and_cached():
    o = basis(30, 5, 3)
    assert o.shape == (30, 5) and torch.allclose(o.T @ o, torch.eye(5, dtype=o.dtype), atol=1e-14)
    assert basis(30, 5, 3) is o and not torch.equal(basis(30, 5, 4), o)
    with pytest.raises(ValueError, match="k = 6"):
        basis(5, 6, 0)


def test_compose_shapes_gradients_and_the_constraint():
    sym = DCS(k=3, seed=0)
    raw = sym.factor(torch.randn(4, 5, dtype=torch.float64), torch.Generator().manual_seed(0))
    assert raw["w"].shape == (4, 5) and raw["a"].shape == raw["b"].shape == (3,)
    raw = {k: v.requires_grad_() for k, v in raw.items()}
    theta = sym.compose(raw)
    assert theta.shape == (4, 5)
    theta.pow(3).sum().backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in raw.values())
    o = basis(20, 3, 0)
    assert torch.allclose(theta.reshape(-1) @ o, raw["a"] * raw["b"], atol=1e-14)  # O^T theta = a * b
    zero = sym.compose({"w": raw["w"], "a": torch.zeros(3, dtype=torch.float64), "b": raw["b"]})
    assert (zero.reshape(-1) @ o).abs().max() < 1e-14  # the symmetric point: constrained up to rounding
    stacked = {k: torch.stack([v.detach(), 2 * v.detach()]) for k, v in raw.items()}  # [M = 2, ...]
    both = sym.compose(stacked)
    assert both.shape == (2, 4, 5) and torch.allclose(both[0], theta.detach())
    assert torch.allclose(both[1], sym.compose({k: v[1] for k, v in stacked.items()}))


def test_load_keeps_names_and_configures_options():
    assert load("symmetry", "plain").compose({"w": torch.ones(2)}).sum() == 2
    sym = load("symmetry", "dcs", k=2, seed=7)
    assert (sym.k, sym.seed) == (2, 7)
    pen = load("symmetry", "penalty", k=1, seed=0, lam=3.0)
    w = torch.randn(6, dtype=torch.float64)
    assert torch.allclose(pen.penalty({"weight": w}), 3.0 * (w @ basis(6, 1, 0)).pow(2).sum())


def test_register_dcs_on_a_linear_layer():
    torch.manual_seed(0)
    lin = nn.Linear(4, 3).double()
    o = basis(12, 2, 0)
    par = register_dcs(lin, o)
    assert lin.weight.shape == (3, 4)
    assert torch.allclose(lin.weight.reshape(-1) @ o, par.a * par.b, atol=1e-14)
    names = {n for n, _ in lin.named_parameters()}
    assert {"parametrizations.weight.original", "parametrizations.weight.0.a", "parametrizations.weight.0.b"} <= names
    lin(torch.randn(5, 4, dtype=torch.float64)).sum().backward()
    assert par.a.grad is not None and lin.parametrizations.weight.original.grad is not None
    with torch.no_grad():
        par.a.zero_()
    assert (lin.weight.reshape(-1) @ o).abs().max() < 1e-14


def test_threshold_one_dimensional_closed_form():
    """p = k = 1: theta = a b, and the dead point is optimal iff |E[x y]| <= gamma (paper.md 2.3)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 1, generator=g, dtype=torch.float64)
    y = 0.7 * x[:, 0] + 0.1 * torch.randn(50, generator=g, dtype=torch.float64)
    assert dcs_threshold(x, y, basis(1, 1, 0)) == pytest.approx(float((x[:, 0] * y).mean().abs()), rel=1e-9)


def _gd(x, y, o, gamma, steps=3000, lr=0.05):
    """Full-batch GD on (w, a, b) with coupled L2 gamma (wd = 2 gamma) -> |O^T theta|."""
    sym = DCS(o.shape[1], 0)
    raw = {k: v.requires_grad_() for k, v in sym.factor(0.1 * torch.ones(x.shape[1], dtype=torch.float64),
                                                        torch.Generator().manual_seed(1)).items()}
    for _ in range(steps):
        loss = (x @ sym.compose(raw) - y).pow(2).mean()
        grads = torch.autograd.grad(loss, list(raw.values()))
        with torch.no_grad():
            for v, gr in zip(raw.values(), grads):
                v -= lr * (gr + 2 * gamma * v)
    return float((sym.compose(raw) @ o).norm().detach())


def test_threshold_separates_gd_runs_just_above_and_below():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100, 8, generator=g, dtype=torch.float64)
    y = x @ torch.randn(8, generator=g, dtype=torch.float64) + 0.3 * torch.randn(100, generator=g, dtype=torch.float64)
    o = basis(8, 2, 0)
    star = dcs_threshold(x, y, o)
    assert star > 0.1
    assert _gd(x, y, o, 1.1 * star) < 1e-9
    assert _gd(x, y, o, 0.9 * star) > 1e-3


def test_experiment_runs_and_its_claims_read_the_table(make_cfg, tmp_path):
    frames = []
    for sym in ("dcs", "plain", "penalty"):
        out = tmp_path / sym
        assert run_job(make_cfg(*TINY, f"symmetry={sym}"), out, job=sym, progress=False)["state"] == "done"
        frames.append(pd.read_parquet(out / "metrics.parquet"))
    table = pd.concat(frames, ignore_index=True)
    last = table[(table.step == 150) & (table.metric == "constraint/norm")].set_index(["symmetry", "gamma"])["value"]
    star = table[table.metric == "ref/dcs/threshold"]["value"].iloc[0]
    assert 0.2 / 2 < star < 8.0 / 2  # the tiny grid brackets the predicted threshold
    assert last["dcs", 4.0] < 1e-6 and last["plain", 4.0] > 1e-3 and last["penalty", 4.0] > 1e-3
    rows = {r["check"]: r for r in ledger_rows("dcs", table)}
    assert set(rows) == {"dcs_exact", "dcs_below", "plain_budget", "penalty_budget"} and rows["dcs_exact"]["passed"]
    assert [p.suffix for p in dcs_plot.draw(table, tmp_path / "fig")] == [".png", ".pdf"]


def test_config_refuses_a_metric_o_other_than_the_symmetry_o(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="differs from symmetry"):
        run_job(make_cfg(*TINY, "symmetry=dcs", "symmetry.k=3"), tmp_path / "never",
                progress=False)
