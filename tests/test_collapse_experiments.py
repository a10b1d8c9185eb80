"""The collapse experiments in the engine (issue 17): stream data through the batcher (online loss,
exact resume), the measures of symexp.evaluation on planted networks, the linear-VAE bank against
its closed form, the claims' measures on planted tables, and one-line config errors."""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from symexp import run
from symexp.evaluation import posterior_collapse, stream
from symexp.claims import neural_collapse as ncc
from symexp.claims import plasticity as lp
from symexp.claims import posterior_collapse as pc
from symexp.config import ConfigError, validate
from symexp.data.collapse_sets import GaussianSpectrum
from symexp.data.continual import SlowlyChangingRegression
from symexp.data.streams import member_seeds
from symexp.ensemble import Ensemble, State, member_table
from symexp.metrics import names
from symexp.models import init_member
from symexp.models.linear_vae import LinearVAE
from symexp.models.mlp import MLP
from symexp.symmetry.breaking import Intact
from symexp.symmetry.plain import Plain
from symexp.theory_posterior import linear_vae_loss, optimum
from tests.test_images import require_fashion_mnist

SCR = ["experiment=plasticity_scr", "data.flip_after=7", "data.probe_examples=40", "train.steps=30",
       "train.eval_every=10", "ensemble.seeds=[0,1]", "ensemble.weight_decays=[0.0,0.001]"]
PERMUTED = ["experiment=plasticity_permuted", "data.n_train=64", "data.n_test=20", "data.pool=4",
            "data.steps_per_task=7", "data.probe_examples=16", "model.widths=[6,5]", "optim.batch_size=4",
            "train.steps=30", "train.eval_every=10", "ensemble.seeds=[0,1]"]


class Killed(Exception):
    """Stands in for a kill right after a checkpoint was written."""


def values(frame: pd.DataFrame) -> pd.Series:
    keys = ["member", "step", "layer", "metric"]
    return frame.sort_values(keys).set_index(keys)["value"]


@pytest.mark.parametrize("setting", ["scr", "permuted"])
def test_stream_job_killed_after_a_checkpoint_resumes_exactly(make_cfg, tmp_path, monkeypatch, setting):
    """Checkpoints every 4 steps split the eval windows (online loss) and the tasks / slow-bit blocks;
    a run killed after the checkpoint at step 16 and rerun equals an uninterrupted run, row for row."""
    overrides = (SCR if setting == "scr" else PERMUTED) + ["train.checkpoint_every=4", "train.checkpoint_min_s=0",
                                                           "breaking=syre"]
    if setting == "permuted":
        require_fashion_mnist()
    clean = run.run_job(make_cfg(*overrides), tmp_path / "clean", progress=False)
    real_train = run.train

    def killed_after_16(*args, **kwargs):
        for ev in real_train(*args, **kwargs):
            yield ev
            if ev.checkpoint and ev.step >= 16:  # the runner has saved this checkpoint
                raise Killed

    monkeypatch.setattr(run, "train", killed_after_16)
    with pytest.raises(Killed):
        run.run_job(make_cfg(*overrides), tmp_path / "killed", progress=False)
    assert (tmp_path / "killed" / "ckpt.pt").exists()
    monkeypatch.setattr(run, "train", real_train)
    resumed = run.run_job(make_cfg(*overrides), tmp_path / "killed", progress=False)
    assert resumed["resumed_from"] == 16 and resumed["state"] == clean["state"] == "done"
    a, b = (values(pd.read_parquet(tmp_path / d / "metrics.parquet")) for d in ("clean", "killed"))
    assert names.LOSS_ONLINE in a.index.get_level_values("metric")
    pd.testing.assert_series_equal(a, b)


def test_online_loss_is_the_mean_loss_of_each_batch_before_its_step(make_cfg, tmp_path):
    """With a step too small to move a float32 weight, every window's online loss is the mean squared
    error of the initial net on that window's stream examples, replayed here from the member's seed."""
    out = tmp_path / "job"
    run.run_job(make_cfg(*SCR, "ensemble.lrs=[1e-30]", "ensemble.weight_decays=[0.0]"), out, progress=False)
    table = pd.read_parquet(out / "metrics.parquet")
    online = table[table.metric == names.LOSS_ONLINE].pivot_table(index="step", columns="seed", values="value")
    assert list(online.index) == [10, 20, 30]  # none at step 0: no step was taken yet
    stream = SlowlyChangingRegression(member_seeds([0, 1]), flip_after=7)
    model = MLP(20, [5], 1, "relu", init="kaiming", scalar_output=True)
    for step in (10, 20, 30):
        x, y = stream.next(10)
        for m, seed in enumerate((0, 1)):
            model.load_state_dict(init_member(model, seed))
            expected = (model(x[m]) - y[m]).pow(2).mean().item()
            assert online.loc[step, seed] == pytest.approx(expected, rel=1e-5)


def test_ffnn_init_is_the_loss_of_plasticity_repos():
    """lop/nets/ffnn.py, replayed: two nn.Linear, then Kaiming-uniform weights (relu, linear), biases 0."""
    torch.manual_seed(7)
    first, last = nn.Linear(20, 5), nn.Linear(5, 1)
    nn.init.kaiming_uniform_(first.weight, nonlinearity="relu")
    nn.init.kaiming_uniform_(last.weight, nonlinearity="linear")
    ours = init_member(MLP(20, [5], 1, "relu", init="kaiming", scalar_output=True), 7)
    torch.testing.assert_close(ours["layers.0.weight"], first.weight, rtol=0, atol=0)
    torch.testing.assert_close(ours["layers.1.weight"], last.weight, rtol=0, atol=0)
    assert not ours["layers.0.bias"].any() and not ours["layers.1.bias"].any()


def planted_ensemble() -> tuple[Ensemble, object]:
    """A 3-4-1 ReLU net, two members alike: unit 0 on the zero plane, unit 1 dead by its bias with live
    weights (on inputs in [0, 1]^3), units 2 and 3 identical (the permutation plane)."""
    model = MLP(3, [4], 1, "relu", scalar_output=True)
    members = member_table({"seeds": [0, 1], "weight_decays": [0.0], "lrs": [0.1], "label_noises": [0.0]})
    ens = Ensemble(model, Plain(), Intact(), members, "regression", torch.device("cpu"), torch.float64)
    w = torch.tensor([[0.0, 0.0, 0.0], [0.5, -0.4, 0.3], [0.7, 0.2, -0.1], [0.7, 0.2, -0.1]], dtype=torch.float64)
    b = torch.tensor([0.0, -2.0, 0.1, 0.1], dtype=torch.float64)
    out = torch.tensor([[0.0, 0.6, -0.5, -0.5]], dtype=torch.float64)
    raw = {"layers.0.weight.w": w, "layers.0.bias.w": b, "layers.1.weight.w": out,
           "layers.1.bias.w": torch.zeros(1, dtype=torch.float64)}
    state = State(raw={k: torch.stack([v, v]) for k, v in raw.items()}, opt={},
                  alive=torch.ones(2, dtype=torch.bool))
    return ens, state


def test_mirror_plane_units_are_counted_apart_from_dead_units():
    ens, state = planted_ensemble()
    x = torch.rand(50, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    _, acts = stream.member_forward(ens, state, x, per_member=False, hidden=True)
    got = {(layer, metric): v.tolist() for layer, metric, v in
           stream.hidden_unit_results(ens, state, acts, {"unit_tol": 0.1, "dead_tau": 0.1})}
    assert got["hidden1", names.DEAD_UNITS] == [2.0, 2.0]  # the zero unit and the biased-off unit
    assert got["hidden1", names.zero_plane(1e-3)] == [1.0, 1.0]  # only the zero unit is on the plane
    assert got["hidden1", names.duplicates(0.1)] == [1.0, 1.0]  # units 2 and 3
    assert got["layers.0.weight", names.WEIGHT_MAGNITUDE][0] == pytest.approx(
        torch.tensor([0.5, 0.4, 0.3, 0.7, 0.2, 0.1, 0.7, 0.2, 0.1]).sum().item() / 12)


def vae_bank(betas, dim=6, latents=3):
    data = GaussianSpectrum(n_train=64, dim=dim, top=8.0, ratio=0.5).build(torch.device("cpu"), torch.float64)
    return data, LinearVAE(dim, latents, betas, noise_var=0.7, init_scale=0.1).double()


def test_linear_vae_bank_is_independent_vaes_and_its_optimum_reads_as_the_closed_form():
    betas = [10.0, 4.0, 1.0]  # beta * 0.7 = 7, 2.8, 0.7 between the eigenvalues 8, 4, 2, 1, 0.5: 1, 2, 3 active
    data, vae = vae_bank(betas)
    assert data.x.mean(0).abs().max() < 1e-12
    torch.testing.assert_close(torch.linalg.eigvalsh(data.cov).flip(0), data.spectrum)
    W, V, log_var = vae.blocks(vae.weight, vae.encoder, vae.log_var)
    loss = linear_vae_loss(W, V, log_var, data.cov, betas, 0.7)
    assert vae(data.x).item() == pytest.approx(loss.sum().item(), rel=1e-12)
    grad = torch.autograd.grad(vae(data.x), vae.weight)[0]
    alone = LinearVAE(6, 3, [betas[1]], 0.7, 0.1).double()
    with torch.no_grad():
        alone.weight.copy_(vae.weight[6:12]), alone.encoder.copy_(vae.encoder[3:6]), alone.log_var.copy_(vae.log_var[3:6])
    torch.testing.assert_close(grad[6:12], torch.autograd.grad(alone(data.x), alone.weight)[0])
    # plant the closed-form optimum of every block: posterior_results reads the predicted counts, no gap
    lam, u = torch.linalg.eigh(data.cov)
    u = u.flip(1)[:, :3]
    opt = optimum(data.spectrum, 3, torch.tensor(betas), 0.7)
    Ws = u * opt["decoder_sq_norms"].sqrt()[:, None, :]
    s = (torch.tensor(betas, dtype=torch.float64) * 0.7)[:, None, None]
    Vs = torch.linalg.solve(Ws.transpose(1, 2) @ Ws + s * torch.eye(3, dtype=torch.float64), Ws.transpose(1, 2))
    members = member_table({"seeds": [0], "weight_decays": [0.0], "lrs": [0.1], "label_noises": [0.0]})
    ens = Ensemble(vae, Plain(), Intact(), members, "objective", torch.device("cpu"), torch.float64)
    raw = {"weight.w": Ws.reshape(1, 18, 3), "encoder.w": Vs.reshape(1, 9, 6), "log_var.w": opt["encoder_var"].log().reshape(1, 9)}
    state = State(raw=raw, opt={}, alive=torch.ones(1, dtype=torch.bool))
    got = {(layer, metric): v.item() for layer, metric, v in posterior_collapse.posterior_results(ens, state, data)}
    for beta, count in zip(betas, (1, 2, 3)):
        layer = names.beta_layer(beta)
        assert got[layer, names.active_latents(0.01)] == got[layer, names.ref_active_latents(0.01)] == count
        assert abs(got[layer, names.POSTERIOR_LOSS_GAP]) < 1e-10


def test_posterior_job_trains_every_beta_to_the_staircase(make_cfg, tmp_path):
    """The engine end to end: a small bank under Adam reaches the closed-form counts, and PC1 reads 0."""
    out = tmp_path / "job"
    run.run_job(make_cfg("experiment=posterior_collapse", "data.dim=3", "data.n_train=32", "model.latents=2",
                         "model.betas=[5.657,2.828,1.414]", "ensemble.seeds=[0,1]", "ensemble.weight_decays=[0.0]",
                         "ensemble.lrs=[0.1]", "train.steps=400", "train.eval_every=400"), out, progress=False)
    table = pd.read_parquet(out / "metrics.parquet")
    cells = pc.cells(table, "none", 0.0)
    assert sorted(cells[pc.PREDICTED].unique()) == [0.0, 1.0, 2.0] and len(cells) == 6
    assert pc.mismatches(table, "none", 0.0) == 0.0
    assert cells[names.POSTERIOR_LOSS_GAP].max() < 1e-6


def test_balanced_subset_and_neural_collapse_rows(make_cfg, tmp_path):
    require_fashion_mnist()
    out = tmp_path / "job"
    run.run_job(make_cfg("experiment=neural_collapse", "data.per_class=6", "data.n_test=30", "model.widths=[16,12]",
                         "optim.batch_size=20", "train.steps=20", "train.eval_every=20",
                         "ensemble.weight_decays=[0.0]"), out, progress=False)
    t = pd.read_parquet(out / "metrics.parquet")
    last = t[t.step == 20].set_index(["member", "metric"])["value"]
    for metric in (names.NC1, names.NC3, names.NC4, names.EQUINORM, names.ETF_ERROR, ncc.RANK, names.ACC_TRAIN):
        assert last.xs(metric, level="metric").notna().all(), metric
    assert (last.xs(ncc.RANK, level="metric") <= 12).all()  # the centred rank of 12 penultimate units
    from symexp.data.collapse_sets import BalancedImages
    data = BalancedImages(per_class=6, pool=4, n_test=5).build(torch.device("cpu"), torch.float32)
    assert data.x.shape == (60, 1, 7, 7) and torch.bincount(data.y).tolist() == [6] * 10


# ---- claims on planted tables ------------------------------------------------------------------

def planted_plasticity(errors: dict, mirrors: dict, steps=(10, 20, 30, 40, 50, 60, 70, 80, 90, 100)) -> pd.DataFrame:
    """SCR rows: per (breaking, wd) arm, one member per seed, online error and mirror counts per step."""
    rows = []
    for (brk, wd), err in errors.items():
        for seed in (0, 1):
            for i, step in enumerate(steps):
                base = dict(experiment=lp.SCR, job=f"{brk}", member=seed + (10 if wd else 0), seed=seed,
                            breaking=brk, weight_decay=wd, step=step)
                rows.append({**base, "layer": "", "metric": names.LOSS_ONLINE, "value": err[i] + 0.01 * seed})
                rows.append({**base, "layer": "hidden1", "metric": names.zero_plane(lp.ZERO_TAU),
                             "value": mirrors[brk, wd][i]})
                rows.append({**base, "layer": "hidden1", "metric": names.duplicates(lp.UNIT_TOL), "value": 0.0})
                rows.append({**base, "layer": "hidden1", "metric": names.DEAD_UNITS, "value": 1.0})
                rows.append({**base, "layer": "hidden1", "metric": names.zero_plane(0.1), "value": 0.0})
    return pd.DataFrame(rows)


def test_plasticity_claims_measure_the_windows_and_the_mirror_count():
    rising = [1.0, 0.8, 0.7, 0.7, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2]
    flat = [1.0, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    table = planted_plasticity({("none", 0.0): rising, ("syre", 1e-3): flat},
                               {("none", 0.0): [0, 0, 0, 0, 0, 1, 1, 2, 2, 3], ("syre", 1e-3): [0] * 10})
    # early windows end in (10, 50]: steps 20-50; late in (80, 100]: steps 90, 100 (seed means add 0.005)
    assert lp.error_ratio(table, "none", 0.0) == pytest.approx((1.15 + 0.005) / (0.725 + 0.005))
    assert lp.error_ratio(table, "syre", 1e-3) == pytest.approx((0.7 + 0.005) / (0.725 + 0.005))
    assert lp.mirror_growth(table, lp.SCR, "none", 0.0) == 3.0
    pooled = [(e + 0.01 * seed, m) for seed in (0, 1) for e, m in zip(rising, [0, 0, 0, 0, 0, 1, 1, 2, 2, 3])]
    assert lp.error_mirror_corr(table) == pytest.approx(spearmanr(*zip(*pooled)).statistic)
    ledger = {(c.claim, c.check): c.row(table, "plasticity") for c in lp.CHECKS}
    assert ledger["LP1", "scr/plain/error_rise"]["passed"] and ledger["LP2", "scr/plain/mirror_growth"]["passed"]
    assert ledger["LP3", "scr/syre@wd=0.001/error"]["passed"]
    assert ledger["LP3", "scr/syre@wd=0.0001/error"] is None  # an arm the table does not hold is left out
    assert "dead units 1.00, zero-plane 3.00" in ledger["LP2", "scr/plain/mirror_growth"]["statement"]


def test_neural_collapse_and_posterior_claims_read_their_tables():
    rows = [dict(experiment=ncc.EXPERIMENT, job=brk, member=i, seed=0, step=100, layer="penultimate",
                 breaking=brk, weight_decay=wd, metric=names.NC1, value=nc1)
            for i, (brk, wd, nc1) in enumerate([("none", 0.0, 2.0), ("none", 1e-4, 1.0), ("none", 1e-3, 0.5),
                                                ("none", 1e-2, 0.1), ("syre", 1e-2, 0.4)])]
    nc = pd.DataFrame(rows)
    assert ncc.nc1_trend(nc) == pytest.approx(-1.0) and ncc.nc1_ratio(nc) == pytest.approx(0.05)
    assert ncc.syre_over_plain(nc, names.NC1, True) == pytest.approx(4.0)
    cells = [(0, 1.0, 2.0, 2.0), (0, 2.0, 1.0, 1.0), (1, 1.0, 1.0, 2.0), (1, 2.0, 1.0, 1.0)]
    rows = [dict(experiment=pc.EXPERIMENT, job="none", member=m, seed=m, step=50, breaking="none", weight_decay=0.0,
                 layer=names.beta_layer(beta), metric=metric, value=v)
            for m, beta, measured, predicted in cells
            for metric, v in ((pc.ACTIVE, measured), (pc.PREDICTED, predicted), (names.POSTERIOR_LOSS_GAP, 0.0))]
    post = pd.DataFrame(rows)
    assert pc.mismatches(post, "none", 0.0) == 1.0 and pc.extra_collapse(post, 0.0) == 1.0
    row = next(c for c in pc.CHECKS if c.check == "staircase").row(post, "posterior_collapse")
    assert not row["passed"] and "3/4 cells" in row["statement"]
    assert math.isclose(pc.cells(post, "none").beta.max(), 2.0)


# ---- bad input: one line naming the key ------------------------------------------------------------

@pytest.mark.parametrize("overrides, key, allowed", [
    (["experiment=plasticity_scr", "optim.batch_size=null"], "optim.batch_size", "batch size >= 1"),
    (["experiment=plasticity_scr", "data.num_flipping_bits=20"], "data.num_flipping_bits", "num_inputs - 1"),
    (["experiment=plasticity_permuted", "data.pool=3"], "data.pool", "divisor of 28"),
    (["experiment=posterior_collapse", "model.latents=17"], "model.latents", "data.dim"),
    (["experiment=posterior_collapse", "model.betas=[1.0,1.0]"], "model.betas", "distinct"),
    (["experiment=posterior_collapse", "data.n_train=16"], "data.n_train", "> data.dim"),
    (["model=linear_vae"], "model.name", "samples"),
    (["experiment=plasticity_scr", "model=mlp"], "model.name", "ffnn"),
])
def test_bad_collapse_configs_fail_in_one_line(make_cfg, overrides, key, allowed):
    with pytest.raises(ConfigError) as e:
        validate(make_cfg(*overrides))
    msg = str(e.value)
    assert msg.startswith(key) and allowed in msg and "\n" not in msg
