"""A sweep survives faults: SIGKILL + rerun, a failing job, concurrent sweeps, and runs are deterministic.

These run the real CLI in subprocesses, as a user would, on a shrunk Figure 1 (left) sweep."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import pandas as pd

from conftest import PYTHON, ROOT, cli_env
from symexp.results import collect
from symexp.run import run_job

SMALL = ["experiment=fig1_left", "data.n_train=100", "data.dim=10", "data.nonzero=3", "compile=false",
         "ensemble.seeds=[0,1]", "ensemble.weight_decays=[0.0,0.2]", "ensemble.lrs=[0.01]"]


def sweep_cmd(results, *extra):
    return [PYTHON, "-m", "symexp.run", "-m", *SMALL, f"paths.results={results}", *extra]


def statuses(sweep_dir):
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.rglob("status.json")}


def values(table):
    keys = ["job", "member", "step", "layer", "metric"]
    return table.sort_values(keys).set_index(keys)["value"]


def test_sigkilled_sweep_resumes_every_job_exactly_once(tmp_path):
    """Kill a 4-job multirun at a random moment once some job holds a checkpoint; the same command
    then finishes: done jobs are skipped, the killed one resumes from its checkpoint, and the
    collected table equals that of an uninterrupted sweep, row for row."""
    long = ["symmetry=plain,rescaling", "breaking=none", "data.teacher=sparse,dense", "train.steps=3000",
            "train.eval_every=150", "train.checkpoint_min_s=0"]  # a checkpoint at every eval, however short
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    sweep_dir = killed / "runs" / "quick" / "fig1_left"
    proc = subprocess.Popen(sweep_cmd(killed, *long), cwd=ROOT, env=cli_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list(sweep_dir.rglob("ckpt.pt")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.5))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted = {p.parent.name for p in sweep_dir.rglob("ckpt.pt")}
    done_before = {j for j, s in statuses(sweep_dir).items() if s["state"] == "done"}
    assert len(done_before) < 4, "the sweep finished before it was killed: lengthen it"

    again = subprocess.run(sweep_cmd(killed, *long), cwd=ROOT, env=cli_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-3000:]
    after = statuses(sweep_dir)
    assert len(after) == 4 and all(s["state"] == "done" for s in after.values())
    assert again.stderr.count("skip") == len(done_before)
    for job in interrupted:  # a job killed mid-way continued from its checkpoint, not from step 0
        assert after[job].get("resumed_from", 0) > 0, after[job]

    subprocess.run(sweep_cmd(clean, *long), cwd=ROOT, env=cli_env(), check=True, capture_output=True)
    resumed, reference = collect(sweep_dir), collect(clean / "runs" / "quick" / "fig1_left")
    assert not resumed.duplicated(["job", "member", "step", "layer", "metric"]).any()
    pd.testing.assert_series_equal(values(resumed), values(reference))


def test_a_failing_job_does_not_poison_the_sweep(tmp_path):
    """Two of four jobs are impossible (a residual needs the rotation symmetry): the other two
    finish, and the sweep ends non-zero with each failed job's overrides and its error file."""
    r = subprocess.run(sweep_cmd(tmp_path, "symmetry=rescaling", "breaking=residual,none", "data.teacher=sparse,dense",
                                 "train.steps=30", "train.eval_every=10"),
                       cwd=ROOT, env=cli_env(), capture_output=True, text=True)
    assert r.returncode == 1
    sweep_dir = tmp_path / "runs" / "quick" / "fig1_left"
    assert sorted(s["state"] for s in statuses(sweep_dir).values()) == ["done", "done"]
    report = r.stderr[r.stderr.index("2 job(s) finished, 2 did not"):]
    failed = [line for line in report.splitlines() if line.startswith("  failed")]
    assert len(failed) == 2 and all("breaking=residual" in line for line in failed)
    for line in failed:
        error = line.split("traceback: ", 1)[1].rstrip(")")
        assert "residual needs symmetry rotation" in open(error).read()
    table = collect(sweep_dir)
    assert set(table.breaking) == {"none"} and table.job.nunique() == 2


def test_concurrent_sweeps_into_one_results_folder_lose_nothing(tmp_path):
    """The same sweep launched twice at once plus a different sweep, all into one results folder:
    every job runs exactly once (the job lock) and both tables are complete."""
    grid = ["symmetry=plain,rescaling", "breaking=none", "data.teacher=sparse,dense", "train.steps=400",
            "train.eval_every=100"]
    cmds = [sweep_cmd(tmp_path, *grid), sweep_cmd(tmp_path, *grid), sweep_cmd(tmp_path, *grid, "name=other")]
    procs = [subprocess.Popen(c, cwd=ROOT, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for c in cmds]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [e[-2000:] for e in errs]
    for name in ("fig1_left", "other"):
        sweep_dir = tmp_path / "runs" / "quick" / name
        sts = statuses(sweep_dir)
        assert len(sts) == 4 and all(s["state"] == "done" for s in sts.values())
        table = collect(sweep_dir)
        assert table.job.nunique() == 4 and table.groupby("job").member.nunique().eq(4).all()
    # the twin sweeps split the shared jobs: each job was run by one process and skipped by the other
    ran_twice = errs[0].count("running in another process") + errs[1].count("running in another process")
    skipped = errs[0].count("skip") + errs[1].count("skip")
    assert skipped == 4 and ran_twice <= 4


def test_same_config_and_seed_give_identical_metrics(make_cfg, tmp_path):
    """Minibatch SGD with label noise exercises every random stream (init, offsets, order, noise)."""
    over = ["experiment=fig1_left_noise", "data.n_train=100", "data.dim=10", "data.nonzero=3", "train.steps=60",
            "train.eval_every=20", "ensemble.seeds=[0,1]", "ensemble.label_noises=[0.5]", "breaking=offset",
            "breaking.scale=0.1"]
    tables = []
    for run in ("a", "b"):
        run_job(make_cfg(*over), tmp_path / run, job="same", progress=False)
        tables.append(pd.read_parquet(tmp_path / run / "metrics.parquet"))
    assert len(tables[0]) > 100
    pd.testing.assert_frame_equal(tables[0], tables[1])
