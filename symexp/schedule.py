"""Run the jobs of many experiments on a few worker processes, longest first.

`make reproduce` runs ~50 jobs on a 2-core machine. Started as one `python -m symexp.run -m` per
experiment, every experiment paid its interpreter, torch and Hydra start-up again (3-5 s each, per
joblib worker too), and a core idled at the tail of every sweep of an odd number of jobs. Here each
worker is one long-lived process with one thread that runs job after job through symexp.run's own Hydra
entry point, with the same command line and so the same directories and files as the sweep would give,
and the jobs of all experiments share the workers, the longest expected job first (LPT scheduling:
within 4/3 of the best makespan). Expected times come from an earlier run's per-job table (jobs.csv);
a job it does not know is started first.
"""
from __future__ import annotations

import multiprocessing
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from symexp.config import unnamed_keys
from symexp.errors import FileError
from symexp.results import parse_status

POOL_RESTARTS = 2  # a worker killed from outside (OOM, a segfault) breaks the pool: start a new one this often


@dataclass(frozen=True)
class Job:
    experiment: str
    pins: tuple[str, ...]  # the job's overrides as the sweeper gives them: `key=value`, one per key
    argv: tuple[str, ...]  # the whole `python -m symexp.run` command line
    expected_s: float = float("inf")

    @property
    def name(self) -> str:
        """Hydra's override_dirname of the job (symexp.run's `job`): its overrides but the excluded keys."""
        return ",".join(sorted(p for p in self.pins if p.split("=", 1)[0] not in unnamed_keys())) or "default"


def expected_seconds(table: Path, scale: str) -> dict[tuple[str, str], float]:
    """(experiment, job) -> wall seconds at `scale`, from a jobs.csv written from `job_table`."""
    frame = pd.read_csv(table)
    frame = frame[(frame.scale == scale) & frame.wall_s.notna()]
    return {(r.experiment, r.job): float(r.wall_s) for r in frame.itertuples()}


def longest_first(jobs: list[Job], expected: dict[tuple[str, str], float]) -> list[Job]:
    """The jobs with their expected times, longest first; unknown jobs first of all, in the given order."""
    timed = [Job(j.experiment, j.pins, j.argv, expected.get((j.experiment, j.name), float("inf"))) for j in jobs]
    return sorted(timed, key=lambda j: -j.expected_s)  # stable: equal (and unknown) jobs keep their order


def _start_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    os.environ["SYMEXP_PROGRESS"] = "lines"  # two workers redrawing one terminal's bar would garble it


def _run_one(argv: tuple[str, ...]) -> int:
    """One job, in a worker: exactly what `python -m symexp.run <argv>` does, without a new interpreter."""
    from symexp import run

    sys.argv = ["symexp.run", *argv]
    try:
        run.preflight(list(argv))
        run.main()
    except SystemExit as e:  # Hydra and the sweep report exit; the worker must live on for the next job
        return e.code if isinstance(e.code, int) else 1
    except Exception:
        traceback.print_exc()
        return 1
    return 0


def run_jobs(jobs: list[Job], workers: int, threads: int = 1, echo=print, runner=_run_one) -> dict[Job, int]:
    """Run `jobs` in their order on `workers` processes of `threads` threads; the exit code of each job
    (-9 for a job still pending when the pool broke a last time). `runner(argv) -> exit code` runs one
    job in a worker (a module-level function: the workers import it)."""
    codes: dict[Job, int] = {}
    started, done = time.time(), 0
    pending = list(jobs)
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the workers before their OpenMP starts
    try:
        for _ in range(POOL_RESTARTS + 1):
            if not pending:
                break
            broken = []
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                     initializer=_start_worker, initargs=(threads,)) as pool:
                futures = {pool.submit(runner, job.argv): job for job in pending}
                for future in as_completed(futures):
                    job = futures[future]
                    try:
                        codes[job] = future.result()
                    except BrokenProcessPool:
                        broken.append(job)
                        continue
                    done += 1
                    left = sum(j.expected_s for j in jobs if j not in codes) / workers
                    echo(f"== [{done}/{len(jobs)}] {job.experiment} {job.name}: "
                         f"{'done' if codes[job] == 0 else f'FAILED (exit {codes[job]})'} at "
                         f"{time.time() - started:.0f} s" + (f", ~{left:.0f} s of jobs left" if left < 1e9 else ""))
            if broken:
                echo(f"schedule: a worker died; {len(broken)} job(s) start again in new workers")
            pending = [j for j in jobs if j in broken]
        codes.update({j: -9 for j in pending})
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    return codes


def job_table(sweep_dirs: dict[str, Path], scale: str) -> pd.DataFrame:
    """One row per job directory under each experiment's sweep dir: its state, steps, members, wall time
    and the parts of it spent measuring and computing the closed-form references, as its status.json
    records them (`longest_first` reads the wall times back from jobs.csv)."""
    rows = []
    for experiment, sweep in sweep_dirs.items():
        # a job with no swept key (override_dirname empty) lives in the sweep dir itself
        for path in sorted([*Path(sweep).glob("status.json"), *Path(sweep).glob("*/status.json")]):
            try:
                status = parse_status(path)
            except FileError as e:  # reported, not set aside: this table only reads
                status = {"state": f"unreadable: {e}"}
            rows.append({"scale": scale, "experiment": experiment, "job": status.get("job", path.parent.name),
                         "state": status.get("state"), "members": status.get("members"),
                         "steps": status.get("steps"), "wall_s": status.get("wall_s"),
                         "measure_s": status.get("measure_s"), "reference_s": status.get("reference_s")})
    return pd.DataFrame(rows, columns=["scale", "experiment", "job", "state", "members", "steps", "wall_s",
                                       "measure_s", "reference_s"])
