"""train.checkpoint_min_s: a cadence step checkpoints only when the last checkpoint (or the start of
training) is at least that many seconds old; a job killed between checkpoints resumes from the last
one written and ends with the numbers of an uninterrupted run."""
from __future__ import annotations

import pandas as pd
import pytest

from symexp import checkpoint, run, train
from symexp.batcher import Batcher

TINY = ["data.n_train=100", "data.dim=10", "data.nonzero=3", "train.steps=40", "train.eval_every=5",
        "ensemble.seeds=[0,1]", "ensemble.weight_decays=[0.0,0.1]", "optim.batch_size=10"]


class Killed(Exception):
    """Stands in for a SIGKILL."""


def killed_after_then_resumed(cfg, job_dir, step: int, monkeypatch) -> dict:
    """Run the job, kill it right after the evaluation at `step` is reported, run it again: its status."""
    real_train = run.train

    def killed_after(*args, **kwargs):
        for ev in real_train(*args, **kwargs):
            yield ev
            if ev.step == step:
                raise Killed

    monkeypatch.setattr(run, "train", killed_after)
    with pytest.raises(Killed):
        run.run_job(cfg, job_dir, progress=False)
    monkeypatch.setattr(run, "train", real_train)
    return run.run_job(cfg, job_dir, progress=False)


def assert_same_table(a_dir, b_dir) -> None:
    keys = ["member", "step", "layer", "metric"]
    a, b = (pd.read_parquet(d / "metrics.parquet").sort_values(keys).set_index(keys)["value"] for d in (a_dir, b_dir))
    pd.testing.assert_series_equal(a, b)


@pytest.fixture
def one_second_per_step(monkeypatch):
    """The floor's clock reads 1 s per training batch drawn: which steps checkpoint is then exact."""
    now = [0.0]
    real_next = Batcher.next

    def next_batch(self):
        now[0] += 1.0
        return real_next(self)

    monkeypatch.setattr(Batcher, "next", next_batch)
    monkeypatch.setattr(train, "clock", lambda: now[0])


@pytest.fixture
def saved_steps(monkeypatch):
    """The step of every checkpoint the runner writes, in order."""
    steps, real_save = [], checkpoint.save

    def save(out_dir, config_hash, state, *args):
        steps.append(state.step)
        real_save(out_dir, config_hash, state, *args)

    monkeypatch.setattr(checkpoint, "save", save)
    return steps


@pytest.mark.parametrize("overrides, expected", [
    (["train.checkpoint_min_s=0"], [5, 10, 15, 20, 25, 30, 35]),  # every cadence step but the last
    (["train.checkpoint_min_s=12"], [15, 30]),  # 12 s after the start, then 12 s after step 15
    (["train.checkpoint_min_s=12", "train.checkpoint_every=4"], [12, 24, 36]),  # checkpoint-only steps
    (["train.checkpoint_min_s=1e9"], []),  # a job shorter than the floor writes none
    (["train.checkpoint_every=0", "train.checkpoint_min_s=0"], []),  # 0 = never
])
def test_checkpoints_are_written_only_past_the_floor(make_cfg, tmp_path, one_second_per_step, saved_steps,
                                                     overrides, expected):
    status = run.run_job(make_cfg(*TINY, *overrides), tmp_path / "job", progress=False)
    assert status["state"] == "done" and status["steps"] == 40
    assert saved_steps == expected
    assert not (tmp_path / "job" / "ckpt.pt").exists()  # a finished job keeps only its results


def test_job_killed_between_checkpoints_resumes_from_the_last_one_exactly(make_cfg, tmp_path, monkeypatch,
                                                                         one_second_per_step, saved_steps):
    """Checkpoints at 15 and 30 only; killed after the evaluation at step 25 (rows 20 and 25 already
    reported), the rerun continues from step 15 and its table equals an uninterrupted run's."""
    cfg = make_cfg(*TINY, "train.checkpoint_min_s=12", "breaking=offset", "ensemble.label_noises=[0.3]")
    run.run_job(cfg, tmp_path / "clean", progress=False)
    resumed = killed_after_then_resumed(cfg, tmp_path / "killed", 25, monkeypatch)
    assert resumed["resumed_from"] == 15 and resumed["state"] == "done"
    assert_same_table(tmp_path / "clean", tmp_path / "killed")


def test_converging_job_resumed_stops_where_an_uninterrupted_one_stops(make_cfg, tmp_path, monkeypatch):
    """Convergence compares with the weights at the previous evaluation; a checkpoint carries them, so a
    job killed one evaluation before it converges resumes and stops at the same step, with the same
    table (it used to run one evaluation window longer: nothing to compare with after a resume)."""
    cfg = make_cfg(*TINY, "train.steps=4000", "train.eval_every=100", "train.checkpoint_min_s=0",
                   "symmetry=plain", "optim.batch_size=null", "train.converge_tol=1e-7")
    clean = run.run_job(cfg, tmp_path / "clean", progress=False)
    assert clean["steps"] < 4000  # it converged
    resumed = killed_after_then_resumed(cfg, tmp_path / "killed", clean["steps"] - 100, monkeypatch)
    assert resumed["resumed_from"] == clean["steps"] - 100
    assert resumed["steps"] == clean["steps"]
    assert_same_table(tmp_path / "clean", tmp_path / "killed")
