"""A Hydra callback that ends every multirun with one summary: how many jobs finished, and for each
job that did not, its overrides and the file holding its traceback. symexp.run records a failing
job and returns, so the launcher goes on with the others; this callback then exits non-zero."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from symexp.results import COMPLETE, is_locked, read_status


def sweep_summary(sweep_dir: Path, since: float = 0.0, only=None) -> tuple[int, list[str], list[str]]:
    """(finished job count, jobs another process is running, one line per job that did not finish)
    for the job directories under `sweep_dir` launched at or after `since` (a sweep dir may also
    hold the jobs of earlier sweeps with other overrides), or for the job directories `only`."""
    finished, elsewhere, problems = 0, [], []
    for hydra_dir in sorted(Path(sweep_dir).rglob(".hydra")):
        job_dir = hydra_dir.parent
        if (only is not None and job_dir not in only) or (hydra_dir / "overrides.yaml").stat().st_mtime < since:
            continue
        status = read_status(job_dir)
        if status and status["state"] in COMPLETE:
            finished += 1
            continue
        if is_locked(job_dir):  # the same job of a concurrent sweep: not a failure of this one
            elsewhere.append(str(job_dir))
            continue
        overrides = OmegaConf.load(hydra_dir / "overrides.yaml")
        error = job_dir / "error.txt"
        state = status["state"] if status else "failed before start"
        where = f"traceback: {error}" if error.exists() else f"no error.txt; see {job_dir}"
        problems.append(f"{state}: {' '.join(overrides)} ({where})")
    return finished, elsewhere, problems


class SweepReport(Callback):
    def __init__(self) -> None:
        self.started, self.launched = 0.0, set()  # a single run (no -m) ends jobs without a multirun start

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        self.started = time.time() - 1.0  # file times are coarse on some file systems
        self.launched: set[Path] = set()

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        # called here when the launcher runs jobs in this process (basic), in the workers otherwise
        self.launched.add(Path(job_return.hydra_cfg.hydra.runtime.output_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        # jobs this process ran, where it knows them: symexp.schedule runs jobs of one sweep dir side by side
        finished, elsewhere, problems = sweep_summary(Path(config.hydra.sweep.dir), self.started,
                                                      only=self.launched or None)
        if elsewhere:
            print(f"symexp: {len(elsewhere)} job(s) are being run by another process", file=sys.stderr)
        if problems:
            lines = "\n".join(f"  {p}" for p in problems)
            print(f"symexp: {finished} job(s) finished, {len(problems)} did not:\n{lines}", file=sys.stderr)
            raise SystemExit(1)
