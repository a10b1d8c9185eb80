"""What the wandb mirror costs: a Figure 1 (left) job with logger=wandb (offline) vs logger=none, and what
one member run costs (time, disk), which sets logger.max_member_runs (symexp/wandb_sink.py).

    python scripts/bench_wandb.py [--repeats 3] [--overrides train.steps=2000 ...] [--sizes 8 64 256]

Part 1, job overhead: the same job in this process, alternating logger=none and logger=wandb (mode
offline) into fresh directories after one warm-up job of each (imports, torch.compile, wandb-core start).
Min wall time over repeats per logger, the ratio, this process's CPU utilisation (CPU time / wall time)
during the best repeat, and the CPU seconds the wandb-core process (a child) spent meanwhile. On a shared,
loaded machine the two walls differ by more than the mirror costs, so the job's time inside the sink
(make_sink, log, close, timed around the runner's calls) is measured too: min over repeats, and its
share of the logger=none wall time, plus wandb-core's CPU seconds, is the overhead figure.
Part 2, per-run cost: K member runs of one job driven through the sink with the Figure 1 job's shape
(its metric keys, its number of evals), closed, on disk; wall seconds and bytes per run, min over repeats.
Writes results/bench/wandb_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from symexp import run
from symexp.run import run_job
from symexp.wandb_sink import MAX_MEMBER_RUNS, SAMPLED_MEMBER_RUNS, make_sink

ROOT = Path(__file__).resolve().parent.parent
JOB = ["experiment=fig1_left", "symmetry=rescaling", "data.teacher=sparse"]


def job_config(overrides: list[str], logger: str, results: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("config", overrides=[*overrides, f"logger={logger}", f"paths.results={results}"])


def child_cpu_seconds() -> float:
    """CPU seconds (user + system) of this process's children so far, read from /proc (wandb-core is one)."""
    ticks, me = os.sysconf("SC_CLK_TCK"), str(os.getpid())
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if fields[1] == me:  # fields after the name: state, ppid, ..., utime (12), stime (13)
            total += int(fields[11]) + int(fields[12])
    return total / ticks


class SinkClock:
    """Seconds the runner spends inside the sink: make_sink, every log, close."""

    def __init__(self):
        self.seconds = 0.0

    def timed(self, fn):
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
        return call

    def make_sink(self, *args, **kwargs):
        sink = self.timed(make_sink)(*args, **kwargs)
        sink.log, sink.close = self.timed(sink.log), self.timed(sink.close)
        return sink


def timed_job(overrides: list[str], logger: str, scratch: Path) -> dict:
    out = Path(tempfile.mkdtemp(dir=scratch))
    cfg = job_config(overrides, logger, out)
    clock = SinkClock()
    run.make_sink = clock.make_sink  # the runner's own calls, timed
    core0, c0, t0 = child_cpu_seconds(), time.process_time(), time.perf_counter()
    try:
        status = run_job(cfg, out / "job", progress=False)
    finally:
        run.make_sink = make_sink
    wall = time.perf_counter() - t0
    table = pd.read_parquet(out / "job" / "metrics.parquet")
    return dict(wall_s=wall, cpu_util=(time.process_time() - c0) / wall, sink_s=clock.seconds,
                child_cpu_s=child_cpu_seconds() - core0, state=status["state"], members=int(table.member.nunique()),
                evals=int(table.step.nunique()), keys=int(table[["layer", "metric"]].drop_duplicates().shape[0]))


def job_overhead(overrides: list[str], repeats: int, scratch: Path) -> dict:
    for logger in ("none", "wandb"):  # warm-up: imports, compile caches, wandb-core start
        timed_job(overrides, logger, scratch)
    runs = {"none": [], "wandb": []}
    for _ in range(repeats):
        for logger in runs:  # interleaved, so drifting machine load hits both alike
            runs[logger].append(timed_job(overrides, logger, scratch))
    best = {logger: min(rs, key=lambda r: r["wall_s"]) for logger, rs in runs.items()}
    sink_s = min(r["sink_s"] for r in runs["wandb"])
    core_s = min(r["child_cpu_s"] for r in runs["wandb"])
    return dict(overrides=overrides, none=best["none"], wandb=best["wandb"],
                all_wall_s={k: [round(r["wall_s"], 3) for r in rs] for k, rs in runs.items()},
                wall_ratio=best["wandb"]["wall_s"] / best["none"]["wall_s"], sink_s=sink_s, core_cpu_s=core_s,
                overhead_share=(sink_s + core_s) / best["none"]["wall_s"])


def synthetic_job(k: int, evals: int, keys: int, out: Path) -> None:
    members = [dict(member=m, seed=m, weight_decay=0.01, gamma=0.005, lr=0.05, label_noise=0.0) for m in range(k)]
    columns = {"experiment": "bench", "job": "bench", "symmetry": "rescaling"}
    logger = {"name": "wandb", "project": "symexp-bench", "entity": None, "mode": "offline", "max_member_runs": k}
    sink = make_sink(logger, {"name": "bench"}, members, columns, "bench", "bench", out, "bench")
    for e in range(evals):
        sink.log(500 * e, [(500 * e, "weight", f"metric{i}", [float(e + m) for m in range(k)]) for i in range(keys)])
    sink.close({"state": "done", "diverged": 0}, 0)


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def per_run_cost(sizes: list[int], evals: int, keys: int, repeats: int, scratch: Path) -> list[dict]:
    rows = []
    for k in sizes:
        best = None
        for _ in range(repeats):
            out = Path(tempfile.mkdtemp(dir=scratch))
            c0, t0 = time.process_time(), time.perf_counter()
            synthetic_job(k, evals, keys, out)
            wall = time.perf_counter() - t0
            if best is None or wall < best[0]:
                best = (wall, (time.process_time() - c0) / wall, disk_bytes(out / "wandb"))
            shutil.rmtree(out)
        wall, util, disk = best
        rows.append(dict(runs=k, evals=evals, keys=keys, wall_s=wall, cpu_util=util, s_per_run=wall / k,
                         disk_bytes=disk, bytes_per_run=disk / k))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--overrides", nargs="*", default=[], help="extra Hydra overrides for the Figure 1 job")
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 64, 256], help="member runs in part 2")
    p.add_argument("--evals", type=int, default=81, help="evals logged per run in part 2 (default: a full "
                   "Figure 1 job, 40000 steps / 500 + 1; convergence may stop it earlier)")
    p.add_argument("--out", default=str(ROOT / "results" / "bench"))
    args = p.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.pop("WANDB_API_KEY", None)
    scratch = Path(tempfile.mkdtemp(prefix="bench_wandb_"))
    try:
        job = job_overhead(JOB + args.overrides, args.repeats, scratch)
        runs = per_run_cost(args.sizes, args.evals, job["none"]["keys"], args.repeats, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = dict(device="cpu", torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                  machine=platform.machine(), load_avg_1m=os.getloadavg()[0], repeats=args.repeats,
                  max_member_runs=MAX_MEMBER_RUNS, sampled_member_runs=SAMPLED_MEMBER_RUNS, job=job, per_run=runs)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "wandb_cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    n, w = job["none"], job["wandb"]
    print(f"job ({n['members']} members, {n['evals']} evals): min wall none {n['wall_s']:.2f} s, wandb "
          f"{w['wall_s']:.2f} s (ratio {job['wall_ratio']:.3f}; cpu util {n['cpu_util']:.2f} / {w['cpu_util']:.2f}); "
          f"in the sink {job['sink_s']:.2f} s + wandb-core {job['core_cpu_s']:.2f} cpu s = "
          f"{100 * job['overhead_share']:.1f} % of the logger=none wall")
    for r in runs:
        print(f"{r['runs']:4d} runs: {1e3 * r['s_per_run']:.1f} ms/run, {r['bytes_per_run'] / 1e3:.0f} kB/run, "
              f"cpu util {r['cpu_util']:.2f}")


if __name__ == "__main__":
    main()
