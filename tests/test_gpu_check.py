"""scripts/gpu_check.py on CPU at smoke sizes: what it records is measured and self-consistent, the
extrapolation follows from the timed runs, a budget too small skips items and says so, and the
script runs without wandb or submitit (the GPU machine has neither)."""
from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time

import pytest
from omegaconf import OmegaConf

from conftest import CONFIGS, ROOT, cli_env

SCRIPT = ROOT / "scripts" / "gpu_check.py"


def run_check(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, dict, str]:
    """The script in a fresh interpreter in which `import wandb` and `import submitit` fail."""
    argv = [str(SCRIPT), "--device", "cpu", "--smoke", "--no-compile", "--out-dir", str(tmp_path), *args]
    code = (f"import runpy, sys; sys.modules.update(wandb=None, submitit=None); sys.argv = {argv!r}; "
            f"runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    out = tmp_path / "gpu_cpu_smoke.json"
    assert out.exists(), proc.stderr[-3000:]
    return proc, json.loads(out.read_text()), out.with_suffix(".md").read_text()


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_times_an_experiment_and_the_ensemble_benchmark(tmp_path):
    proc, rec, md = run_check(tmp_path, "--budget-s", "240", "--only", "transformer", "ensemble")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert rec["errors"] == [] and rec["skipped"] == [] and rec["smoke"] is True
    (exp,) = rec["experiments"]
    paper = OmegaConf.merge(*(OmegaConf.load(CONFIGS / d / f) for d, f in
                              (("experiment", "transformer.yaml"), ("scaled", "transformer_paper.yaml"))))
    assert exp["experiment"] == "transformer" and exp["unit"] == "tokens/s"
    assert exp["jobs"] == 3 and exp["job"] == "ensemble.seeds=[0]"  # the paper sweep: one job per seed
    assert exp["members"] == 2  # smoke: 1 seed x 2 weight decays
    assert exp["paper_steps"] == paper.train.steps
    assert exp["paper_evals"] == math.ceil(paper.train.steps / paper.train.eval_every) + 1
    # the step time is the slope between the warm runs evaluated only at their ends
    warm = [r for r in exp["runs"][1:] if r["eval_every"] == r["steps"]]
    slope = (warm[-1]["s"] - warm[0]["s"]) / (warm[-1]["steps"] - warm[0]["steps"])
    assert math.isfinite(exp["step_s"]) and exp["step_s"] > 0 and exp["step_s"] == pytest.approx(slope)
    assert exp["setup_s"] == pytest.approx(warm[0]["s"] - warm[0]["steps"] * slope)
    assert exp["compile_s"] == pytest.approx(exp["runs"][0]["s"] - warm[0]["s"])
    assert exp["throughput"] == pytest.approx(exp["per_step"] * exp["members"] / exp["step_s"])
    evals = (exp["paper_evals"] - 2) * (exp["eval_s"] or 0.0)
    assert exp["job_wall_s"] == pytest.approx(exp["compile_s"] + exp["setup_s"] + exp["paper_steps"] * slope + evals)
    assert exp["job_wall_s"] >= exp["paper_steps"] * exp["step_s"] + exp["setup_s"] + exp["compile_s"]
    assert exp["sweep_wall_s"] == pytest.approx(exp["compile_s"] + 3 * (exp["job_wall_s"] - exp["compile_s"]))
    (ens,) = rec["ensemble"]
    assert ens["M"] == 4 and not ens["compiled"] and ens["members"] == 4
    assert ens["step_s"] > 0 and ens["loop_step_s"] > 0 and ens["speedup"] == pytest.approx(ens["loop_step_s"] / ens["step_s"])
    assert "| transformer | ensemble.seeds=[0] | 3 | 2 |" in md and "SMOKE sizes" in md


def test_budget_too_small_skips_every_item_and_says_so(script, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(script, "T0", time.monotonic() - 100)  # 100 s spent: a 60 s budget is gone
    argv = ["--device", "cpu", "--smoke", "--budget-s", "60", "--out-dir", str(tmp_path), "--only", "transformer",
            "resnet_compiled", "ensemble"]
    assert script.main(argv) == 0
    rec = json.loads((tmp_path / "gpu_cpu_smoke.json").read_text())
    assert rec["experiments"] == rec["ensemble"] == rec["resnet"] == []
    assert [s["item"] for s in rec["skipped"]] == ["transformer", "ensemble", "resnet_compiled"]  # run order
    assert all(s["reason"].startswith("budget: needs") for s in rec["skipped"])
    md = (tmp_path / "gpu_cpu_smoke.md").read_text()
    assert "- skipped transformer: budget: needs" in md and "skip ensemble: not enough budget left" in capsys.readouterr().out


def test_watchdog_cuts_the_running_item_at_the_budgets_end(script, tmp_path, monkeypatch):
    exits = []
    monkeypatch.setattr(script.os, "_exit", exits.append)  # the real one would end pytest too
    monkeypatch.setattr(script, "T0", time.monotonic())
    args = script.parse_args(["--device", "cpu", "--smoke", "--budget-s", "0.3", "--out-dir", str(tmp_path)])
    check = script.Check(args, tmp_path / "gpu.json", script.describe(args, []), tmp_path)
    check.add("errors", {"item": "fig1_left", "error": "RuntimeError: earlier"})  # a record written before the cut
    check.current, check.pending = "transformer", ["ensemble"]  # as run_items leaves them mid-item
    script.watchdog(check).join(timeout=10)
    assert exits == [0] and time.monotonic() - script.T0 >= 0.3
    rec = json.loads((tmp_path / "gpu.json").read_text())
    assert rec["skipped"] == [{"item": "transformer", "reason": "budget: cut off at the budget's end"},
                              {"item": "ensemble", "reason": "budget: spent before it started"}]
    assert rec["errors"] == [{"item": "fig1_left", "error": "RuntimeError: earlier"}]  # kept
    assert "- skipped transformer: budget: cut off" in (tmp_path / "gpu.md").read_text()


def test_a_missing_image_set_is_replaced_by_random_images_its_loader_reads(script, tmp_path):
    from symexp.data.images import load_cifar10, load_fashion_mnist

    args = script.parse_args(["--device", "cpu", "--smoke", "--budget-s", "10", "--out-dir", str(tmp_path)])
    check = script.Check(args, tmp_path / "gpu.json", script.describe(args, []), tmp_path)
    for name, load, shape in (("cifar10", load_cifar10, (3, 32, 32)), ("permuted_fashion_mnist", load_fashion_mnist, (1, 28, 28))):
        override, note = script.image_root(check, OmegaConf.create({"name": name, "root": str(tmp_path / "absent")}))
        images = load(override["data.root"])
        assert images.x_train.shape == (80, *shape) and images.x_test.shape == (32, *shape), name
        assert int(images.y_train.max()) <= 9 and note.startswith("random ")
    assert script.image_root(check, OmegaConf.create({"name": "regression", "dim": 3})) == ({}, "as configured")


def test_bad_arguments_fail_in_one_line_before_any_work(script, capsys):
    for argv, message in ((["--only", "fig9"], "--only fig9: unknown item; allowed: fig1_right_resnet"),
                          (["--budget-s", "0"], "--budget-s 0: must be a positive number of seconds")):
        with pytest.raises(SystemExit) as e:
            script.parse_args(["--device", "cpu", "--budget-s", "10", *argv])
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_sweep_expands_like_hydras_basic_sweeper(script):
    jobs = script.sweep_jobs({"breaking": "none,offset,mask", "ensemble.seeds": "[0],[1],[2]", "dtype": "float64"})
    assert len(jobs) == 9 and len({tuple(j.items()) for j in jobs}) == 9
    assert jobs[0] == {"breaking": "none", "ensemble.seeds": "[0]", "dtype": "float64"}
    assert {j["ensemble.seeds"] for j in jobs} == {"[0]", "[1]", "[2]"}
