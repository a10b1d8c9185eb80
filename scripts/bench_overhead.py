"""Measurement overhead per experiment: what metrics, evaluations and checkpoints cost as a fraction of
a job's wall time at the experiment's own eval cadence (issue 13, target <= 5 %).

    python scripts/bench_overhead.py [--only fig1_left ...] [--repeats 2] [--threads 1]

For each experiment, one job of its default config (no sweep axis set), shrunk to S steps
(S = min(train.steps, 4 * eval_every), converge_tol = 0 so no run stops early), run in this process
three ways:
  A  S steps, evaluated and checkpointed every eval_every steps (as configured)
  B  S steps, evaluated only at step 0 and at the end
  C  2S steps, evaluated only at step 0 and at the end
Then one evaluation with its checkpoint costs (A - B) / (S / eval_every - 1), one step (C - B) / S,
and the job's fixed cost (data, model, compile, references, files) is B - S * step - 2 * eval. The
full-length job is extrapolated from them: overhead = (steps / eval_every + 1) evaluations over its
wall time (configured steps; a run that converges early stops sooner). Each run is the min wall time
over --repeats, with its process CPU utilisation; threads default to 1, as the jobs of a reproduce
sweep run (joblib, one thread each). Wall-time differences of a few percent drown in the noise of a
shared machine, so run A also times its measurement directly (evaluate, the eval-window convergence
check, rows, checkpoints: `timed_s`), a profile that other processes disturb far less.
Writes results/bench/overhead_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from symexp import checkpoint, rows, train
from symexp.run import run_job

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"


def compose_job(exp: str, results: Path, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=[f"experiment={exp}", f"paths.results={results}", *overrides])


class MeasurementTimer:
    """Wall seconds spent in the measurement path of a job, by wrapping its functions for the duration."""

    TARGETS = ((train, "evaluate"), (train, "converged"), (checkpoint, "save"), (rows.Rows, "extend"))

    def __enter__(self):
        self.seconds, self.saved = 0.0, [(owner, name, getattr(owner, name)) for owner, name in self.TARGETS]
        for owner, name, fn in self.saved:
            setattr(owner, name, self.wrap(fn))
        return self

    def wrap(self, fn):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
        return timed

    def __exit__(self, *exc):
        for owner, name, fn in self.saved:
            setattr(owner, name, fn)


def timed_job(exp: str, steps: int, eval_every: int, repeats: int, extra: list[str]) -> dict:
    """min wall seconds of one job (fresh output dir each repeat), the CPU utilisation of that run and
    the seconds it spent measuring."""
    best = None
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp, MeasurementTimer() as measuring:
            cfg = compose_job(exp, Path(tmp), [f"train.steps={steps}", f"train.eval_every={eval_every}",
                                               f"train.checkpoint_every={eval_every}", "train.converge_tol=0", *extra])
            c0, t0 = time.process_time(), time.perf_counter()
            run_job(cfg, Path(tmp) / "job", progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if best is None or wall < best["wall_s"]:
            best = dict(wall_s=wall, cpu_util=cpu / wall, timed_s=measuring.seconds)
    return best


def measure(exp: str, repeats: int, extra: list[str]) -> dict:
    train = OmegaConf.to_container(compose_job(exp, ROOT / "results", extra).train, resolve=True)
    full, every = train["steps"], train["eval_every"]
    S = min(full, 4 * every)
    if S // every < 2:
        return dict(experiment=exp, skipped=f"steps {full} hold fewer than 2 evaluation windows of {every}")
    timed_job(exp, every, every, 1, extra)  # warm-up: compile caches, data files, imports
    a = timed_job(exp, S, every, repeats, extra)
    b = timed_job(exp, S, S, repeats, extra)
    c = timed_job(exp, 2 * S, 2 * S, repeats, extra)
    step = max(c["wall_s"] - b["wall_s"], 0.0) / S
    per_eval = max(a["wall_s"] - b["wall_s"], 0.0) / (S // every - 1)
    fixed = max(b["wall_s"] - S * step - 2 * per_eval, 0.0)
    evals_full = full // every + 1
    full_wall = fixed + full * step + evals_full * per_eval
    timed_eval = a["timed_s"] / (S // every + 1)  # A measures at 0, every eval_every and at the end
    return dict(experiment=exp, steps=full, eval_every=every, shrunk_steps=S, A_cadence=a, B_end_only=b,
                C_double_end_only=c, shrunk_overhead=(a["wall_s"] - b["wall_s"]) / a["wall_s"],
                shrunk_overhead_timed=a["timed_s"] / a["wall_s"], step_s=step, eval_s=per_eval,
                eval_s_timed=timed_eval, fixed_s=fixed, full_job_wall_s=full_wall,
                full_job_overhead=evals_full * per_eval / full_wall,
                full_job_overhead_timed=evals_full * timed_eval / (fixed + full * step + evals_full * timed_eval))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", nargs="+", help="experiments (default: every configs/experiment/*.yaml)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "overhead_cpu.json"))
    p.add_argument("overrides", nargs="*", help="Hydra overrides for every job (e.g. compile=false)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    exps = args.only or sorted(f.stem for f in (CONFIGS / "experiment").glob("*.yaml"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # rows of experiments not measured now are kept, so a rerun of a few (--only) updates the file
    kept = [r for r in json.loads(out.read_text())["rows"] if r["experiment"] not in exps] if out.exists() else []
    report = dict(torch=torch.__version__, threads=args.threads, repeats=args.repeats, overrides=args.overrides,
                  loadavg_before=os.getloadavg(), rows=kept)
    for exp in exps:
        try:
            row = measure(exp, args.repeats, args.overrides)
        except Exception as e:  # noqa: BLE001 -- one experiment that cannot run must not cost the others' rows
            row = dict(experiment=exp, skipped=f"{type(e).__name__}: {e}")
        report["rows"].append(row)
        report["loadavg_after"] = os.getloadavg()
        out.write_text(json.dumps(report, indent=2) + "\n")  # rewritten after each: a cut run keeps its rows
        if "skipped" in row:
            print(f"{exp:22s} skipped: {row['skipped']}", flush=True)
            continue
        print(f"{exp:20s} shrunk {row['shrunk_overhead']:6.1%} (timed {row['shrunk_overhead_timed']:5.1%})  full job "
              f"{row['full_job_overhead']:6.1%} (timed {row['full_job_overhead_timed']:5.1%})  eval "
              f"{row['eval_s'] * 1e3:6.0f} ms (timed {row['eval_s_timed'] * 1e3:6.0f})  "
              f"step {row['step_s'] * 1e6:7.0f} us  fixed {row['fixed_s']:4.1f} s  "
              f"cpu {row['A_cadence']['cpu_util']:.2f}/{row['B_end_only']['cpu_util']:.2f}",
              flush=True)
    print(f"load {os.getloadavg()}; wrote {out}")


if __name__ == "__main__":
    main()
