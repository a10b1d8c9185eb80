"""Measurement overhead per experiment: what metrics, evaluations and checkpoints cost as a fraction of
a job's wall time at the experiment's own eval cadence (issue 13, target <= 5 %).

    python scripts/bench_overhead.py [--only fig1_left ...] [--repeats 2] [--threads 1]

For each experiment, one job of its default config (no sweep axis set), shrunk to S steps
(S = min(train.steps, 4 * eval_every), converge_tol = 0 so no run stops early), run in this process
two ways:
  A  S steps, evaluated every eval_every steps, checkpointed at every checkpoint_every step
     (train.checkpoint_min_s = 0, so that one checkpoint's cost is measured)
  B  S steps, evaluated only at step 0 and at the end
Run A times its measurement directly, a profile that other processes disturb far less than
wall-time differences: `timed_s` = seconds in evaluate, the eval-window convergence check and the
rows; `ckpt_s` = seconds in checkpoint.save over `saves` checkpoints; one step = the seconds from the
second evaluation's start to the last one's, less the measurement between them, per step (no
compile, data loading or files in it). The job's fixed cost (data, model, compile, references,
files) is B - S * step - B's own measurement. As configured, a job checkpoints at most once per
train.checkpoint_min_s seconds of its wall time (symexp.train.CheckpointFloor), so its overhead counts
min(cadence checkpoints, wall / min_s) checkpoints at the measured cost each: `shrunk_overhead_timed`
for the shrunk job, and `full_job_overhead_timed` for the full-length job extrapolated from step,
evaluation, checkpoint and fixed costs (configured steps; a run that converges early stops sooner).
`*_every_ckpt` are the same with a checkpoint at every cadence step (checkpoint_min_s = 0), and
`wall diff` = (A - B) / A the noisy wall-time estimate (+-5 % on a shared machine), checkpoints
included. Each run is the min wall time over --repeats, with its process CPU utilisation; threads
default to 1, as the jobs of a reproduce sweep run (joblib, one thread each). Writes results/bench/overhead_cpu.json.
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
    """Wall seconds spent in the measurement path of a job (and apart, in its checkpoints), by wrapping
    its functions for the duration."""

    TARGETS = ((train, "evaluate"), (train, "converged"), (rows.Rows, "extend"), (checkpoint, "save"))

    def __enter__(self):
        self.seconds, self.ckpt_s, self.saves = 0.0, 0.0, 0
        self.eval_starts = []  # (perf_counter, seconds measured so far) at each evaluation's start
        self.saved = [(owner, name, getattr(owner, name)) for owner, name in self.TARGETS]
        for owner, name, fn in self.saved:
            setattr(owner, name, self.wrap(fn, name == "save"))
        return self

    def wrap(self, fn, is_save: bool):
        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            if fn.__name__ == "evaluate":
                self.eval_starts.append((t0, self.seconds + self.ckpt_s))
            try:
                return fn(*args, **kwargs)
            finally:
                if is_save:
                    self.ckpt_s += time.perf_counter() - t0
                    self.saves += 1
                else:
                    self.seconds += time.perf_counter() - t0
        return timed

    def __exit__(self, *exc):
        for owner, name, fn in self.saved:
            setattr(owner, name, fn)


def timed_job(exp: str, steps: int, eval_every: int, repeats: int, extra: list[str]) -> dict:
    """min wall seconds of one job (fresh output dir each repeat), the CPU utilisation of that run and
    the seconds it spent measuring and checkpointing (a checkpoint at every cadence step)."""
    best = None
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp, MeasurementTimer() as measuring:
            cfg = compose_job(exp, Path(tmp), [f"train.steps={steps}", f"train.eval_every={eval_every}",
                                               f"train.checkpoint_every={eval_every}", "train.checkpoint_min_s=0",
                                               "train.converge_tol=0", *extra])
            c0, t0 = time.process_time(), time.perf_counter()
            run_job(cfg, Path(tmp) / "job", progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if best is None or wall < best["wall_s"]:
            (t1, m1), (tn, mn) = measuring.eval_starts[1], measuring.eval_starts[-1]
            step = ((tn - t1) - (mn - m1)) / (steps - eval_every) if steps > eval_every else None
            best = dict(wall_s=wall, cpu_util=cpu / wall, timed_s=measuring.seconds, ckpt_s=measuring.ckpt_s,
                        saves=measuring.saves, step_s=step)
    return best


def floored_saves(cadence_saves: int, wall_s: float, min_s: float) -> int:
    """Checkpoints a job of this wall time writes under the floor: at most one per min_s seconds."""
    return cadence_saves if min_s <= 0 else min(cadence_saves, int(wall_s // min_s))


def measure(exp: str, repeats: int, extra: list[str]) -> dict:
    train = OmegaConf.to_container(compose_job(exp, ROOT / "results", extra).train, resolve=True)
    full, every, min_s = train["steps"], train["eval_every"], train["checkpoint_min_s"]
    S = min(full, 4 * every)
    if S // every < 2:
        return dict(experiment=exp, skipped=f"steps {full} hold fewer than 2 evaluation windows of {every}")
    timed_job(exp, every, every, 1, extra)  # warm-up: compile caches, data files, imports
    a = timed_job(exp, S, every, repeats, extra)
    b = timed_job(exp, S, S, repeats, extra)
    step = a["step_s"]
    per_eval = max(a["wall_s"] - a["ckpt_s"] - b["wall_s"], 0.0) / (S // every - 1)
    fixed = max(b["wall_s"] - S * step - b["timed_s"], 0.0)
    timed_eval = a["timed_s"] / (S // every + 1)  # A measures at 0, every eval_every and at the end
    save_s = a["ckpt_s"] / max(a["saves"], 1)
    bare = a["wall_s"] - a["ckpt_s"]  # the shrunk job without its checkpoints
    shrunk_saves = floored_saves(a["saves"], bare, min_s)
    evals_full, cadence_saves_full = full // every + 1, (full - 1) // every
    full_bare = fixed + full * step + evals_full * timed_eval
    full_saves = floored_saves(cadence_saves_full, full_bare, min_s)
    return dict(experiment=exp, steps=full, eval_every=every, checkpoint_min_s=min_s, shrunk_steps=S,
                A_cadence=a, B_end_only=b, step_s=step, eval_s=per_eval,
                eval_s_timed=timed_eval, save_s=save_s, fixed_s=fixed,
                shrunk_saves=shrunk_saves, full_job_saves=full_saves, full_job_wall_s=full_bare + full_saves * save_s,
                shrunk_overhead=(a["wall_s"] - b["wall_s"]) / a["wall_s"],
                shrunk_overhead_timed=(a["timed_s"] + shrunk_saves * save_s) / (bare + shrunk_saves * save_s),
                shrunk_overhead_timed_every_ckpt=(a["timed_s"] + a["ckpt_s"]) / a["wall_s"],
                full_job_overhead_timed=(evals_full * timed_eval + full_saves * save_s)
                / (full_bare + full_saves * save_s),
                full_job_overhead_timed_every_ckpt=(evals_full * timed_eval + cadence_saves_full * save_s)
                / (full_bare + cadence_saves_full * save_s))


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
        print(f"{exp:20s} timed: shrunk {row['shrunk_overhead_timed']:5.1%} "
              f"full job {row['full_job_overhead_timed']:5.1%} ({row['full_job_saves']} ckpt; "
              f"ckpt every eval {row['full_job_overhead_timed_every_ckpt']:5.1%})  "
              f"wall diff {row['shrunk_overhead']:6.1%}  eval {row['eval_s_timed'] * 1e3:6.1f} ms  "
              f"ckpt {row['save_s'] * 1e3:5.1f} ms  step {row['step_s'] * 1e6:7.0f} us  "
              f"fixed {row['fixed_s']:4.1f} s  "
              f"cpu {row['A_cadence']['cpu_util']:.2f}/{row['B_end_only']['cpu_util']:.2f}", flush=True)
    print(f"load {os.getloadavg()}; wrote {out}")


if __name__ == "__main__":
    main()
