"""A job's files, its skip-on-rerun, the wandb mirror, collect's checks, and the Lasso identity."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from symexp.config import ConfigError
from symexp.results import CollectError, collect, write_json
from symexp.run import run_job

TINY = ["data.n_train=100", "data.dim=10", "data.nonzero=3", "train.steps=40", "train.eval_every=20",
        "ensemble.seeds=[0,1]", "ensemble.weight_decays=[0.0,0.1]"]


def test_job_writes_tidy_rows_status_and_config(make_cfg, tmp_path):
    out = tmp_path / "job"
    status = run_job(make_cfg(*TINY, "symmetry=rescaling"), out, job="symmetry=rescaling", progress=False)
    assert status["state"] == "done" and status["members"] == 4 and status["steps"] == 40
    df = pd.read_parquet(out / "metrics.parquet")
    for col in ("experiment", "job", "member", "seed", "weight_decay", "gamma", "lr", "batch_size",
                "symmetry", "breaking", "step", "layer", "metric", "value"):
        assert col in df.columns, col
    assert sorted(df.step.unique()) == [0, 20, 40]
    assert (df.gamma == df.weight_decay / 2).all()
    assert set(df[df.metric == "sparsity/frac_zero@0.001"].member) == {0, 1, 2, 3}
    assert (out / "config.yaml").read_text().count("rescaling") >= 1
    assert not (out / "ckpt.pt").exists() and not list(out.glob(".*.tmp"))


def test_rerun_of_finished_job_is_skipped_and_other_config_refused(make_cfg, tmp_path, capsys):
    out = tmp_path / "job"
    first = run_job(make_cfg(*TINY), out, progress=False)
    before = (out / "metrics.parquet").stat().st_mtime_ns
    again = run_job(make_cfg(*TINY), out, progress=False)
    assert again["started"] == first["started"] and "skip" in capsys.readouterr().err
    assert (out / "metrics.parquet").stat().st_mtime_ns == before
    with pytest.raises(ConfigError, match="another config"):
        run_job(make_cfg(*TINY, "ensemble.lrs=[0.02]"), out, progress=False)
    assert (out / "metrics.parquet").stat().st_mtime_ns == before  # nothing overwritten


def test_collect_checks_rows_against_status(make_cfg, tmp_path):
    sweep = tmp_path / "sweep"
    for sym in ("plain", "rescaling"):
        run_job(make_cfg(*TINY, f"symmetry={sym}"), sweep / sym, job=sym, progress=False)
    table = collect(sweep)
    assert set(table.job) == {"plain", "rescaling"} and table.member.nunique() == 4
    status = json.loads((sweep / "plain" / "status.json").read_text())
    write_json(sweep / "plain" / "status.json", {**status, "members": 3})
    with pytest.raises(CollectError, match="do not match"):
        collect(sweep)


def test_rescaled_regression_is_the_lasso(make_cfg, tmp_path):
    """Full-batch GD on u*v with L2 gamma converges to Lasso(2 gamma): same support, same coefficients."""
    run_job(make_cfg("data.n_train=200", "data.dim=20", "data.nonzero=5", "dtype=float64", "symmetry=rescaling",
                     "references=[lasso]", "train.steps=6000", "train.eval_every=3000", "ensemble.lrs=[0.05]",
                     "ensemble.weight_decays=[0.02,0.2,0.6]"), tmp_path / "j", progress=False)
    df = pd.read_parquet(tmp_path / "j" / "metrics.parquet")
    last = df[df.step == df.step.max()].set_index(["member", "metric"])["value"].unstack()
    assert (last["ref/lasso/support_mismatch@0.001"] == 0).all()
    assert (last["ref/lasso/max_abs_diff"] < 1e-3).all(), last["ref/lasso/max_abs_diff"]
    assert last["sparsity/frac_zero@0.001"].is_monotonic_increasing  # more decay, sparser
    assert last["sparsity/frac_zero@0.001"].iloc[-1] > 0.5


def test_collect_a_key_swept_over_mixed_types(make_cfg, tmp_path):
    """optim.batch_size=8,null: one job's column holds an int, the other's None; the table still writes."""
    sweep = tmp_path / "sweep"
    for bs in ("8", "null"):
        over = f"optim.batch_size={bs}"
        run_job(make_cfg(*TINY, "optim=sgd", over), sweep / bs, job=over, overrides=[over], progress=False)
    table = collect(sweep)
    assert sorted(table["optim.batch_size"].fillna(-1).unique()) == [-1, 8]
    table.to_parquet(tmp_path / "t.parquet")  # one type per column: parquet accepts it
