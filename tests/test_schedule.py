"""symexp.schedule: the jobs of several experiments on one pool of workers, as `make reproduce` runs them."""
from __future__ import annotations

import os

import pandas as pd
import pytest

from conftest import PYTHON, ROOT, cli_env
from symexp import experiments, schedule
from symexp.schedule import Job

FAST = ["train.steps=30", "train.eval_every=10", "data.n_train=100", "data.dim=10", "data.nonzero=3",
        "compile=false", "ensemble.seeds=[0,1]", "ensemble.weight_decays=[0.0,0.2]", "data.teacher=sparse",
        "breaking=none"]


def jobs_of(results, experiment="fig1_left", extra=()):
    registry = experiments.discover()
    base = ("-m", f"experiment={experiment}", "scale=quick", f"paths.results={results}", *FAST, *extra)
    return [Job(experiment, pins, (*base, *pins)) for pins in experiments.sweep_jobs(registry, experiment, "quick",
                                                                                      [*FAST, *extra])]


def test_sweep_jobs_pin_what_the_sweep_varies_later_overrides_win():
    registry = experiments.discover()
    pins = experiments.sweep_jobs(registry, "fig1_left", "quick")
    assert len(pins) == 8 == len(set(pins)) == experiments.sweep_size(registry, "fig1_left", "quick")
    assert {p for job in pins for p in job} == {"symmetry=plain", "symmetry=rescaling", "breaking=none",
                                                "breaking=offset", "data.teacher=sparse", "data.teacher=dense"}
    # a plain override of a swept key removes it from the sweep; a sweep override adds or replaces one
    assert experiments.sweep_jobs(registry, "fig1_left", "quick", ["breaking=none", "data.teacher=sparse",
                                                                   "logger=wandb"]) == [
        ("symmetry=plain", "breaking=none", "data.teacher=sparse", "logger=wandb"),
        ("symmetry=rescaling", "breaking=none", "data.teacher=sparse", "logger=wandb")]
    assert experiments.sweep_jobs(registry, "transformer", "quick") == [()]
    assert experiments.sweep_jobs(registry, "dcs", "quick", ["optim.lr=0.1,0.2"])[-1] == ("symmetry=penalty",
                                                                                          "optim.lr=0.2")


def test_longest_first_puts_unknown_jobs_first_then_by_expected_time():
    jobs = [Job("a", ("k=1",), ()), Job("a", ("k=2", "logger=wandb"), ()), Job("b", (), ()), Job("c", (), ())]
    order = schedule.longest_first(jobs, {("a", "k=1"): 5.0, ("a", "k=2"): 50.0, ("b", "default"): 20.0})
    assert [(j.experiment, j.name) for j in order] == [("c", "default"), ("a", "k=2"), ("b", "default"),
                                                      ("a", "k=1")]
    assert [j.expected_s for j in order] == [float("inf"), 50.0, 20.0, 5.0]


def test_pool_jobs_write_what_a_plain_sweep_writes(tmp_path):
    """Every job of two experiments through two workers: the same job directories, numbers and states as
    `python -m symexp.run -m` gives, and the per-job table reads them back."""
    import subprocess

    pool, plain = tmp_path / "pool", tmp_path / "plain"
    jobs = jobs_of(pool) + jobs_of(pool, "fig1_left_noise", ["optim.batch_size=4,16"])
    codes = schedule.run_jobs(jobs, workers=2, echo=lambda line: None)
    assert list(codes.values()) == [0] * 6
    r = subprocess.run([PYTHON, "-m", "symexp.run", "-m", "experiment=fig1_left", f"paths.results={plain}", *FAST,
                        "symmetry=plain,rescaling"], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    dirs = lambda root: sorted(p.parent.relative_to(root) for p in root.rglob("metrics.parquet"))  # noqa: E731
    assert [d for d in dirs(pool) if "fig1_left/" in f"{d}/"] == dirs(plain)
    for d in dirs(plain):
        a, b = pd.read_parquet(pool / d / "metrics.parquet"), pd.read_parquet(plain / d / "metrics.parquet")
        pd.testing.assert_frame_equal(a, b)
    table = schedule.job_table({e: pool / "runs" / "quick" / e for e in ("fig1_left", "fig1_left_noise")}, "quick")
    assert len(table) == 6 and (table.state == "done").all() and (table.wall_s > 0).all()
    assert ((table.measure_s > 0) & (table.measure_s < table.wall_s)).all()  # 4 evaluations of every job
    assert ((table.reference_s >= 0) & (table.reference_s < table.wall_s)).all()  # timed apart, for every job
    assert set(table.job) == {j.name for j in jobs}  # the names the next run's expectations are keyed on
    expected = tmp_path / "jobs.csv"
    table.to_csv(expected, index=False)
    assert schedule.expected_seconds(expected, "quick")[("fig1_left", jobs[0].name)] == table.wall_s[
        table.job == jobs[0].name].item()
    assert schedule.expected_seconds(expected, "paper") == {}


def test_a_failing_job_fails_alone_even_beside_a_job_of_its_own_sweep(tmp_path):
    """Two jobs of one sweep dir side by side: the bad one's exit code is its own, the good one's is 0
    (the sweep report of a one-job sweep judges only the job it launched)."""
    good, bad = jobs_of(tmp_path)
    bad = Job(bad.experiment, bad.pins, (*bad.argv, "data.n_train=0"))
    codes = schedule.run_jobs([bad, good], workers=2, echo=lambda line: None)
    assert codes[good] == 0 and codes[bad] != 0


def die_once(argv):
    """A runner whose first job kills its worker, as the OOM killer would."""
    marker = argv[0]
    if argv[1] == "die" and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(9)
    return int(argv[1] == "fail")


def test_a_dead_worker_is_replaced_and_the_pending_jobs_still_run(tmp_path):
    marker = str(tmp_path / "died")
    jobs = [Job("x", (f"k={k}",), (marker, k)) for k in ("die", "ok", "fail", "ok2")]
    lines = []
    codes = schedule.run_jobs(jobs, workers=1, echo=lines.append, runner=die_once)
    assert os.path.exists(marker) and codes == {jobs[0]: 0, jobs[1]: 0, jobs[2]: 1, jobs[3]: 0}
    assert any("worker died" in line for line in lines)


@pytest.mark.parametrize("key", ["--jobs", "--threads"])
def test_reproduce_rejects_a_worker_count_below_one(key):
    import subprocess

    r = subprocess.run([PYTHON, "scripts/reproduce.py", "--only", "dcs", key, "0"], cwd=ROOT, env=cli_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and f"{key}: must be >= 1" in r.stderr.strip().splitlines()[-1]


def test_job_table_reads_a_job_without_swept_keys_from_the_sweep_dir_itself(tmp_path):
    """A sweep with nothing swept (the transformer) has its one job in the sweep dir, not below it."""
    from symexp.results import write_json

    done = {"state": "done", "config_hash": "h", "members": 1}
    write_json(tmp_path / "transformer" / "status.json", {**done, "job": "default", "wall_s": 60.0})
    write_json(tmp_path / "dcs" / "symmetry=dcs" / "status.json", {**done, "job": "symmetry=dcs", "wall_s": 5.0})
    (tmp_path / "dcs" / "symmetry=plain").mkdir()
    (tmp_path / "dcs" / "symmetry=plain" / "status.json").write_text("{not json")
    table = schedule.job_table({"transformer": tmp_path / "transformer", "dcs": tmp_path / "dcs"}, "quick")
    assert table[["experiment", "job", "wall_s"]].values.tolist()[:2] == [["transformer", "default", 60.0],
                                                                         ["dcs", "symmetry=dcs", 5.0]]
    assert table.state.iloc[2].startswith("unreadable") and (tmp_path / "dcs" / "symmetry=plain" / "status.json").exists()
