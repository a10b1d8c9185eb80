"""The real command line, in subprocesses, as a user runs it."""
from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest

from conftest import PYTHON, ROOT, cli_env

FAST = ["train.steps=30", "train.eval_every=10", "data.n_train=100", "data.dim=10", "data.nonzero=3",
        "compile=false", "ensemble.seeds=[0,1]", "ensemble.weight_decays=[0.0,0.2]"]


def run(*args, timeout=300):
    r = subprocess.run([PYTHON, *args], cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def sweep(tmp_path, *extra, timeout=300):
    return run("-m", "symexp.run", "-m", "experiment=fig1_left", "symmetry=plain,rescaling", "breaking=none",
               "data.teacher=sparse", f"paths.results={tmp_path}", *FAST, *extra, timeout=timeout)


def test_multirun_collect_and_rerun_skips(tmp_path):
    sweep(tmp_path)
    sweep_dir = tmp_path / "runs" / "quick" / "fig1_left"
    jobs = sorted(p.parent for p in sweep_dir.rglob("status.json"))
    assert len(jobs) == 2 and [j.name.rsplit(",", 3)[1] for j in jobs] == ["symmetry=plain", "symmetry=rescaling"]
    started = {j: json.loads((j / "status.json").read_text())["started"] for j in jobs}
    out = tmp_path / "table.parquet"
    run("-m", "symexp.cli", "collect", str(sweep_dir), "-o", str(out))
    table = pd.read_parquet(out)
    assert set(table.symmetry) == {"plain", "rescaling"} and table.groupby("job").member.nunique().eq(4).all()
    assert {"data.teacher", "breaking"} <= set(table.columns)

    again = sweep(tmp_path)  # the same command: every job is already done
    assert again.stderr.count("skip") == 2
    assert {j: json.loads((j / "status.json").read_text())["started"] for j in jobs} == started


def test_readme_multirun_without_paths_writes_under_the_launch_directory(tmp_path):
    """`python -m symexp.run -m experiment=...` as the README writes it, with no paths.results: the sweep dir
    is resolved before Hydra sets its runtime config (it once failed: 'HydraConfig was not set')."""
    r = subprocess.run([PYTHON, "-m", "symexp.run", "-m", "experiment=fig1_left", "symmetry=plain", "breaking=none",
                        *FAST], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    statuses = list((tmp_path / "results" / "runs" / "quick" / "fig1_left").rglob("status.json"))
    assert statuses and all(json.loads(s.read_text())["state"] == "done" for s in statuses)


def test_single_run_writes_its_job_and_warns_of_nothing(tmp_path):
    """Without -m: one job in hydra.run.dir, and stderr free of callback warnings (the sweep report's
    on_job_end once raised there, before any multirun had started)."""
    job = tmp_path / "single"
    r = run("-m", "symexp.run", "experiment=fig1_left", f"paths.results={tmp_path}", f"hydra.run.dir={job}", *FAST)
    assert json.loads((job / "status.json").read_text())["state"] == "done"
    assert "Warning" not in r.stderr and "raised" not in r.stderr, r.stderr[-2000:]


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    statuses = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("status.json")]
    assert sorted(s["state"] for s in statuses) == ["done", "done"]


@pytest.mark.slow
def test_submitit_local_launcher(tmp_path):
    sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", timeout=600)
    statuses = [json.loads(p.read_text()) for p in (tmp_path / "runs").rglob("status.json")]
    assert sorted(s["state"] for s in statuses) == ["done", "done"]


def test_plot_and_claims_from_the_table_alone(tmp_path):
    """Figure 1 (left) and its ledger rows come from the collected table, nothing else."""
    run("scripts/reproduce.py", "--results", str(tmp_path), "--only", "fig1_left", *FAST,
        "ensemble.lrs=[0.01]", timeout=600)
    assert (tmp_path / "figures" / "fig1_left.png").stat().st_size > 10_000
    assert (tmp_path / "figures" / "fig1_left.pdf").exists()
    ledger = pd.read_csv(tmp_path / "claims.csv")
    assert set(ledger.claim) == {"C1"} and len(ledger) == 5
    assert ledger.measured.notna().sum() >= 4 and ledger.passed.isin([True, False]).all()
    # redraw from the table alone, into a fresh folder
    run("-m", "symexp.cli", "plot", "fig1_left", "--tables", str(tmp_path / "tables"), "--out", str(tmp_path / "again"))
    assert (tmp_path / "again" / "fig1_left.png").exists()
