"""Theorem 1 parts 1-2 on the tanh net (T1): the mirrors are symmetries of the loss, training from a
symmetric point keeps O^T theta exactly 0, the Hessian's cross block vanishes there; plus tiny runs of
the three Theorem-1 experiments through the real configs, tables and claims."""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch.func import hessian

from conftest import ledger_rows
from symexp.config import ConfigError
from symexp.models.tanh_net import TanhNet, mirror_projectors, mse
from symexp.plots import theory_critical, theory_invariance, theory_noise
from symexp.run import run_job

WIDTH, DIM = 5, 3
P = WIDTH * (1 + DIM)


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, DIM, generator=g, dtype=torch.float64)
    teacher = torch.randn(DIM, generator=g, dtype=torch.float64)
    return x, torch.tanh(x @ teacher) + 0.1 * torch.randn(40, generator=g, dtype=torch.float64)


def _net() -> TanhNet:
    torch.manual_seed(0)
    return TanhNet(DIM, WIDTH, 0.5, dead_units=1, twin_pairs=1).double()


def test_init_puts_units_on_the_symmetric_points():
    w = _net().weight.detach()
    assert torch.equal(w[0], torch.zeros(1 + DIM, dtype=torch.float64))
    assert torch.equal(w[1], w[2]) and not torch.equal(w[2], w[3])
    assert (w[1:].abs() > 0).all()


def test_projectors_are_mirror_symmetries_of_the_loss_and_the_rotated_one_is_not():
    x, y = _data()
    proj = mirror_projectors(WIDTH, DIM, 1, 1)
    theta = torch.randn(P, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    loss = lambda t: float(mse(t.reshape(WIDTH, 1 + DIM), x, y))  # noqa: E731
    for name, rank in (("sign", 1 + DIM), ("perm", 1 + DIM), ("rotated", 1 + DIM)):
        p = proj[name]
        assert torch.allclose(p @ p, p, atol=1e-12) and torch.allclose(p, p.T, atol=1e-12)
        assert round(float(torch.trace(p))) == rank
        mirrored = loss((torch.eye(P, dtype=torch.float64) - 2 * p) @ theta)
        if name == "rotated":
            assert abs(mirrored - loss(theta)) > 1e-3  # a reflection, but not a symmetry of the net
        else:
            assert mirrored == pytest.approx(loss(theta), rel=1e-12)


def test_sgd_from_the_symmetric_point_keeps_the_breaking_component_exactly_zero():
    """Plain minibatch SGD with coupled L2 (the engine's update) on the full parameter vector."""
    x, y = _data()
    net = _net()
    theta = net.weight.detach().clone().requires_grad_()
    gen = torch.Generator().manual_seed(1)
    proj = mirror_projectors(WIDTH, DIM, 1, 1)
    start = theta.detach().clone()
    for _ in range(300):
        idx = torch.randperm(40, generator=gen)[:4]
        (g,) = torch.autograd.grad(mse(theta, x[idx], y[idx]), theta)
        with torch.no_grad():
            theta -= 0.1 * (g + 0.2 * theta)
    flat = theta.detach().reshape(-1)
    assert (flat - start.reshape(-1)).abs().max() > 0.05  # it did train
    assert float((proj["sign"] @ flat).norm()) == 0.0  # the dead unit: tanh(0) = 0 exactly, decay keeps 0
    assert float((proj["perm"] @ flat).norm()) < 1e-14  # the twins: identical rows get identical updates
    assert float((proj["rotated"] @ flat).norm()) > 1e-2


def test_hessian_cross_block_vanishes_only_at_the_symmetric_point():
    x, y = _data()
    proj = mirror_projectors(WIDTH, DIM, 1, 1)
    eye = torch.eye(P, dtype=torch.float64)
    h_at = lambda w: hessian(lambda t: mse(t.reshape(WIDTH, 1 + DIM), x, y))(w.reshape(-1))  # noqa: E731
    sym = _net().weight.detach()
    h = h_at(sym)
    for name in ("sign", "perm"):
        assert float((proj[name] @ h @ (eye - proj[name])).norm()) < 1e-12 * float(h.norm())
    assert float((proj["rotated"] @ h @ (eye - proj["rotated"])).norm()) > 1e-3 * float(h.norm())
    broken = sym.clone()
    broken[0] = 0.3  # the dead unit revived: the sign mirror's cross block is no longer 0
    hb = h_at(broken)
    assert float((proj["sign"] @ hb @ (eye - proj["sign"])).norm()) > 1e-3 * float(hb.norm())


def test_config_rejects_a_layout_wider_than_the_net(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match="cannot hold"):
        run_job(make_cfg("experiment=theory_invariance", "model.width=2"), tmp_path / "never", progress=False)
    with pytest.raises(ConfigError, match="closed forms of model tanh_net"):
        run_job(make_cfg("experiment=dcs", "references=[critical]"), tmp_path / "never2", progress=False)
    with pytest.raises(ConfigError, match="probe_hessian: needs"):
        run_job(make_cfg("experiment=theory_invariance", "model.twin_pairs=0"), tmp_path / "never4", progress=False)
    with pytest.raises(ConfigError, match="xy_norm"):
        run_job(make_cfg("experiment=theory_noise", "data.xy_norm=-1.0"), tmp_path / "never3", progress=False)


def _run(make_cfg, out, name: str, *overrides: str) -> pd.DataFrame:
    job = ",".join(overrides) or name  # distinct jobs, as Hydra's override_dirname makes them
    assert run_job(make_cfg(f"experiment={name}", *overrides), out, job=job, progress=False)["state"] == "done"
    return pd.read_parquet(out / "metrics.parquet")


def test_invariance_experiment_table_claims_and_figure(make_cfg, tmp_path):
    t = _run(make_cfg, tmp_path / "run", "theory_invariance", "train.steps=60", "train.eval_every=20",
             "ensemble.seeds=[0]")
    norms = t[t.metric == "norm/l2"].set_index(["layer", "step", "member"])["value"].sort_index()
    assert norms["sign_break"].max() == 0.0 and norms["perm_break"].max() < 1e-14
    assert (norms.loc["unit3", 60] - norms.loc["unit3", 0]).abs().max() > 1e-3  # the free unit trained
    rows = {r["check"]: r for r in ledger_rows("theory_invariance", t)}
    assert all(r["passed"] for r in rows.values()) and rows["hessian_block_rotated"]["measured"] > 1e-3
    assert [p.suffix for p in theory_invariance.draw(t, tmp_path / "fig")] == [".png", ".pdf"]


def test_critical_experiment_dies_above_and_lives_below(make_cfg, tmp_path):
    t = _run(make_cfg, tmp_path / "run", "theory_critical", "model.width=1", "ensemble.seeds=[0]",
             "ensemble.weight_decays=[1.8,2.4]", "train.steps=600", "train.eval_every=300")
    rows = {r["check"]: r for r in ledger_rows("theory_critical", t)}
    assert rows["dead_above_w1"]["passed"] and rows["alive_below_w1"]["passed"]
    assert rows["dead_above_w1"]["measured"] < 1e-6 < rows["alive_below_w1"]["measured"]
    assert t[t.metric == "ref/critical/gamma_star"]["value"].iloc[0] == pytest.approx(1.0, rel=1e-12)
    assert [p.suffix for p in theory_critical.draw(t, tmp_path / "fig")] == [".png", ".pdf"]


def test_noise_experiment_logs_the_lyapunov_reference(make_cfg, tmp_path):
    frames = [_run(make_cfg, tmp_path / f"b{b}", "theory_noise", f"optim.batch_size={b}", "ensemble.seeds=[0,1,2,3]",
                   "ensemble.lrs=[0.004,0.05,1.0]", "train.steps=400", "train.eval_every=400") for b in (1, 4)]
    t = pd.concat(frames, ignore_index=True)
    lam = t[t.metric == "ref/lyapunov/exponent"].groupby(["batch_size", "lr"])["value"].first()
    assert lam[1, 0.004] > 0 > lam[1, 0.05] and lam[1, 1.0] > 0  # B = 1: collapse window around 0.05
    star = t[t.metric == "ref/lyapunov/eta_star"].groupby("batch_size")["value"].first()
    assert star[4] > 2 * star[1]  # the threshold moves up with B
    assert {r["check"] for r in ledger_rows("theory_noise", t)} >= {"lyapunov_finite_T", "threshold_B1", "batch_trend"}
    assert [p.suffix for p in theory_noise.draw(t, tmp_path / "fig")] == [".png", ".pdf"]
