"""Rotation symmetry W = U V: invariance, the residual control, the (sigma - gamma)_+ closed form,
config checks, and a tiny Figure 1 (middle) job."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from symexp import optim, theory
from symexp.config import ConfigError, validate
from symexp.components import load
from symexp.ensemble import Ensemble, member_table
from symexp.run import run_job
from symexp.symmetry import breaking, rotation
from symexp.symmetry.breaking import Intact, Residual
from symexp.symmetry.rotation import Rotation
from symexp.evaluation.weights import measure

TINY = ["experiment=fig1_middle", "data.n_train=40", "data.dim=6", "train.steps=40", "train.eval_every=20",
        "ensemble.seeds=[0]", "ensemble.weight_decays=[0.0,0.2]", "ensemble.lrs=[0.01]", "references=[]"]


def _data(**kw):
    cfg = dict(n_train=50, dim=6, spectrum="decay", top=2.0, decay=0.7, rank=3, noise=0.0, seed=0)
    return load("data", "lowrank_map", **{**cfg, **kw}).build(torch.device("cpu"), torch.float64)


def test_compose_shapes_and_rotation_invariance():
    gen = torch.Generator().manual_seed(0)
    raw = rotation.factor(torch.randn(5, 7, dtype=torch.float64), gen)
    assert raw["U"].shape == (5, 5) and raw["V"].shape == (5, 7) and rotation.compose(raw).shape == (5, 7)
    assert rotation.factor(torch.randn(5, 7), gen, hidden=3)["V"].shape == (3, 7)
    r, _ = torch.linalg.qr(torch.randn(5, 5, generator=gen, dtype=torch.float64))
    turned = rotation.compose({"U": raw["U"] @ r, "V": r.T @ raw["V"]})
    assert torch.allclose(turned, rotation.compose(raw), atol=1e-12)
    stacked = {k: torch.stack([v, 2 * v]) for k, v in raw.items()}  # [M, ...] broadcasts
    assert torch.allclose(rotation.compose(stacked)[1], 4 * rotation.compose(raw))
    with pytest.raises(ValueError, match="matrix"):
        rotation.factor(torch.randn(5), gen)


def test_residual_is_plain_uv_with_v_shifted_by_identity():
    gen = torch.Generator().manual_seed(1)
    raw = {f"weight.{k}": v for k, v in rotation.factor(torch.randn(4, 4, dtype=torch.float64), gen).items()}
    fixed = Residual(scale=1.0).offsets(raw, gen)
    assert set(fixed) == {"weight.V"} and torch.equal(fixed["weight.V"], torch.eye(4, dtype=torch.float64))
    x = torch.randn(4, dtype=torch.float64)
    u, v = raw["weight.U"], raw["weight.V"]
    w = rotation.compose({s: t for s, t in zip("UV", breaking.shifted(raw, fixed).values())})
    assert torch.allclose(w @ x, u @ (v @ x + x))  # f(x) = U (V x + x)
    with pytest.raises(ValueError, match="square"):
        Residual(scale=1.0).offsets({"weight.V": torch.zeros(3, 4)}, gen)


def test_lowrank_map_is_whitened_and_its_mse_is_the_summed_error():
    data = _data(noise=0.3, spectrum="rank")
    x, y, m_hat = data.truth.x64, data.truth.y64, data.truth.target
    d, n = 6, 50
    assert torch.allclose(x.T @ x / n, d * torch.eye(d, dtype=torch.float64), atol=1e-10)  # whitened, times d
    assert torch.allclose(data.truth.teacher_sv[3:], torch.zeros(3, dtype=torch.float64))
    w = torch.randn(d, d, dtype=torch.float64)
    mse = (x @ w.T - y).pow(2).mean()  # the engine's loss: mean over n * d elements
    const = (x @ m_hat.T - y).pow(2).mean()
    assert torch.allclose(mse - const, (w - m_hat).pow(2).sum())  # = |W - M_hat|_F^2 + const


def test_gd_on_uv_with_decay_soft_thresholds_the_spectrum():
    data = _data()
    members = member_table(dict(seeds=[0], weight_decays=[0.2, 0.8, 1.6], lrs=[0.1], label_noises=[0.0]))
    ens = Ensemble(load("model", "matrix", init_scale=0.1).build(data), Rotation(), Intact(), members, "regression", torch.device("cpu"), torch.float64)
    state = ens.init_state(optim.Rule())
    step = ens.make_step(optim.Rule(), frozenset(ens.raw0), False, False, 1e8, False)
    for _ in range(2000):
        state.raw, state.opt, state.alive, _ = step(state.raw, state.opt, state.alive, data.x, data.y, ens.hyper["lr"])
    w = ens.effective(state.raw, ens.fixed)["weight"]
    ref = theory.spectrum_reference(data, w, [m["gamma"] for m in members], 1e-3)
    # gamma = 0.1, 0.4, 0.8 sit >= 0.06 from every sigma_i = 2 * 0.7^i (i < 6), so each mode converges
    # at a rate >= 2 lr 0.06 per step: after 2000 steps the error is round-off
    assert ref["ref/spectrum/max_rel_diff"].max() < 1e-6
    assert ref["ref/spectrum/rank@0.001"].tolist() == [6, 5, 3]
    sv = measure(w, ("spectrum",), {"constraint": {"k": 0}})
    assert torch.allclose(torch.stack([sv[f"spectrum/sv{i}"] for i in range(6)], 1),
                          torch.stack([ref[f"ref/spectrum/sv{i}"] for i in range(6)], 1), atol=2e-6)


def test_residual_needs_rotation(make_cfg):
    with pytest.raises(ConfigError, match="breaking.name: residual needs symmetry rotation") as e:
        validate(make_cfg("breaking=residual"))
    assert "\n" not in str(e.value)
    validate(make_cfg("experiment=fig1_middle", "breaking=residual"))
    validate(make_cfg("experiment=fig1_middle", "breaking=offset"))
    with pytest.raises(ConfigError, match="data.rank"):
        validate(make_cfg("experiment=fig1_middle", "data.spectrum=rank", "data.rank=0"))


@pytest.mark.parametrize("brk", ["none", "residual", "offset"])
def test_fig1_middle_job_runs(make_cfg, tmp_path, brk):
    out = tmp_path / brk
    status = run_job(make_cfg(*TINY, f"breaking={brk}"), out, job=brk, progress=False)
    assert status["state"] == "done" and status["members"] == 2
    df = pd.read_parquet(out / "metrics.parquet")
    assert {"rank/tau@0.001", "rank/erank", "spectrum/sv0", "spectrum/sv5"} <= set(df.metric)
    assert not {"spectrum/sv6"} & set(df.metric)


def test_hidden_width_caps_the_rank(make_cfg, tmp_path):
    """symmetry.hidden = 2 < d: U [d, 2], V [2, d], so every member's W has rank <= 2 throughout."""
    run_job(make_cfg(*TINY, "symmetry.hidden=2"), tmp_path, progress=False)
    w = torch.load(tmp_path / "weights.pt")["weight"]
    assert w.shape == (2, 6, 6) and (torch.linalg.matrix_rank(w) <= 2).all()
    df = pd.read_parquet(tmp_path / "metrics.parquet")
    ranks = df[df.metric == "rank/tau@0.001"].value
    assert ranks.max() == 2 and len(ranks) == 6  # 2 members x 3 evals
    for bad, msg in (("symmetry.hidden=0", ">= 1"), ("symmetry.hidden=3", "needs hidden = data.dim")):
        with pytest.raises(ConfigError, match=msg):
            validate(make_cfg(*TINY, bad, "breaking=residual"))
