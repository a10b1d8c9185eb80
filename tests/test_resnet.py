"""The CIFAR ResNet18: its size, its block-channel unit probes, and BatchNorm under the batched engine
(stacked per-member running statistics) equal to standalone runs."""
from __future__ import annotations

import pandas as pd
import torch

from symexp import optim
from symexp.symmetry.breaking import Intact
from symexp.symmetry.plain import Plain
from symexp.data import TensorData
from symexp.data.images import write_cifar10_like
from symexp.ensemble import Ensemble, member_table
from symexp.models.resnet import ResNet18
from symexp.run import run_job
from symexp.evaluation.weights import measure


def test_parameter_count_and_shapes():
    assert sum(p.numel() for p in ResNet18(3, 10).parameters()) == 11_173_962
    narrow = ResNet18(1, 10, width=1 / 16)  # the 1-channel stem of Fashion-MNIST
    logits, feats = narrow(torch.randn(2, 1, 28, 28), features=True)
    assert logits.shape == (2, 10) and feats.shape == (2, 32)


def test_block_channel_probe_counts_a_duplicated_channel_once():
    torch.manual_seed(0)
    net = ResNet18(1, 10, width=1 / 16)
    theta = {k: v.detach().clone()[None] for k, v in net.named_parameters()}
    p = "layer1.0."
    for key, dim in (("conv1.weight", 1), ("bn1.weight", 1), ("bn1.bias", 1), ("conv2.weight", 2)):
        t = theta[p + key]
        t.select(dim, 1).copy_(t.select(dim, 0))  # channel 1 := channel 0 (in, BN and out weights)
    out = measure(net.probe_views(theta)["layer1.0"], ("units",), {"unit_tol": 0.1, "dead_tau": 0.1, "constraint": {"k": 0}})
    assert out["units/independent"].tolist() == [3.0]  # 4 channels, two identical


def test_train_step_updates_each_members_batchnorm_statistics():
    data = torch.randn(2, 8, 1, 12, 12)
    ens = Ensemble(ResNet18(1, 10, width=1 / 16), Plain(), Intact(),
                   member_table(dict(seeds=[0, 1], weight_decays=[0.0], lrs=[0.1], label_noises=[0.0])),
                   "classification", torch.device("cpu"), torch.float64)
    rule = optim.Rule(name="sgd", momentum=0.9)
    state = ens.init_state(rule)
    step = ens.make_step(rule, frozenset(ens.raw0), True, True, 1e8, False, state.buffers)
    step(state.raw, state.opt, state.alive, data.double(), torch.randint(0, 10, (2, 8)), ens.hyper["lr"])
    mean = state.buffers["bn1.running_mean"]
    assert state.buffers["bn1.num_batches_tracked"].tolist() == [1, 1]
    assert (mean != 0).all() and not torch.equal(mean[0], mean[1])  # per member, from its own batch


def test_batched_members_equal_standalone_runs(make_cfg, tmp_path):
    """Per-member batches, augmentation and BatchNorm statistics: weights and eval-mode test losses
    (which read the running statistics) of a batched member equal its standalone run."""
    root = write_cifar10_like(tmp_path / "cifar-10-batches-py", n_train_per_batch=8, n_test=8)
    common = ["experiment=fig1_right_resnet", "data=cifar10", f"data.root={root}", "dtype=float64",
              "data.n_test=8", "metrics.train_subset=8", "optim.batch_size=4", "train.steps=4",
              "train.eval_every=2", "metrics.corr_matrix=false", "breaking=offset"]
    grid = [(0, 0.0), (1, 0.01)]
    seeds, wds = sorted({s for s, _ in grid}), sorted({w for _, w in grid})
    run_job(make_cfg(*common, f"ensemble.seeds={seeds}", f"ensemble.weight_decays={wds}"), tmp_path / "b",
            progress=False)
    batched = torch.load(tmp_path / "b" / "weights.pt")
    rows = pd.read_parquet(tmp_path / "b" / "metrics.parquet")
    for seed, wd in grid:
        out = tmp_path / f"s{seed}"
        run_job(make_cfg(*common, f"ensemble.seeds=[{seed}]", f"ensemble.weight_decays=[{wd}]"), out, progress=False)
        m = seeds.index(seed) * len(wds) + wds.index(wd)
        for k, v in torch.load(out / "weights.pt").items():
            assert (v[0] - batched[k][m]).abs().max() < 1e-10, (k, m)
        one = pd.read_parquet(out / "metrics.parquet")
        for metric in ("loss/test", "loss/train"):
            a = rows[(rows.member == m) & (rows.metric == metric)].value.to_numpy()
            b = one[one.metric == metric].value.to_numpy()
            assert abs(a - b).max() < 1e-10, metric
