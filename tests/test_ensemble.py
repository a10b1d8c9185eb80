"""The batched ensemble equals M separate runs; a diverging member is frozen without touching the others."""
from __future__ import annotations

import torch

from symexp.run import run_job

SMALL = ["data.n_train=200", "data.dim=20", "data.nonzero=4", "dtype=float64", "train.steps=60", "train.eval_every=20"]


def weights(out) -> torch.Tensor:
    return torch.load(out / "weights.pt")["weight"]


def test_batched_equals_separate_runs(make_cfg, tmp_path):
    """Minibatch SGD with momentum, per-member batches and label noise, the symmetry broken by offsets:
    every source of per-member randomness is exercised."""
    common = SMALL + ["symmetry=rescaling", "breaking=offset", "breaking.scale=0.3", "optim=sgd",
                      "optim.batch_size=16", "optim.momentum=0.5", "optim.schedule=cosine"]
    grid = dict(seeds=[0, 1], weight_decays=[0.0, 0.1], lrs=[0.01, 0.03], label_noises=[0.0, 0.5])
    lists = [f"ensemble.{k}=[{','.join(map(str, v))}]" for k, v in grid.items()]
    run_job(make_cfg(*common, *lists), tmp_path / "batched", progress=False)
    batched = weights(tmp_path / "batched")
    assert batched.shape == (16, 20)
    m = 0
    for seed in grid["seeds"]:
        for wd in grid["weight_decays"]:
            for lr in grid["lrs"]:
                for noise in grid["label_noises"]:
                    out = tmp_path / f"single{m}"
                    one = [f"ensemble.seeds=[{seed}]", f"ensemble.weight_decays=[{wd}]",
                           f"ensemble.lrs=[{lr}]", f"ensemble.label_noises=[{noise}]"]
                    run_job(make_cfg(*common, *one), out, progress=False)
                    assert (weights(out)[0] - batched[m]).abs().max() < 1e-12, f"member {m} differs"
                    m += 1
    # the members really differ from each other (the comparison above is not vacuous)
    assert (batched[0] - batched[1]).abs().max() > 1e-3


def test_diverging_member_is_frozen_and_others_unaffected(make_cfg, tmp_path):
    base = SMALL + ["symmetry=rescaling", "model.init_scale=1.0", "ensemble.seeds=[0]", "ensemble.weight_decays=[0.01]"]
    run_job(make_cfg(*base, "ensemble.lrs=[0.01,0.02]"), tmp_path / "ok", progress=False)
    status = run_job(make_cfg(*base, "ensemble.lrs=[0.01,50.0,0.02]"), tmp_path / "bad", progress=False)
    assert status["state"] == "diverged" and status["diverged"] == 1 and status["members"] == 3
    ok, bad = weights(tmp_path / "ok"), weights(tmp_path / "bad")
    assert torch.equal(bad[0], ok[0]) and torch.equal(bad[2], ok[1])  # bit-identical
    assert torch.isfinite(bad[1]).all()  # frozen at its last finite parameters
