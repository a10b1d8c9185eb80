"""Local files are the truth: tidy rows in parquet, a status file per job, written atomically.

A job directory holds
    config.yaml       the resolved config
    metrics.parquet   tidy rows (experiment, job, member, seed, weight_decay, ..., step, layer, metric, value)
    status.json       {"state": running | done | diverged | failed, "config_hash", "members", "diverged", ...}
    ckpt.pt           the last resumable checkpoint (removed when the job ends)
    error.txt         the traceback of a failed job
    .lock             held (flock) while a process runs the job
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch

COMPLETE = ("done", "diverged")


class Rows:
    """Column buffers of (step, layer, metric, value[M]); expanded to one row per member on output."""

    def __init__(self):
        self.blocks: list[tuple[int, str, str, list[float]]] = []

    def add(self, step: int, layer: str, metric: str, values: torch.Tensor) -> None:
        self.blocks.append((step, layer, metric, values.detach().double().cpu().tolist()))

    def at(self, step: int) -> list:
        return [b for b in self.blocks if b[0] == step]

    def frame(self, members: list[dict], job_columns: dict) -> pd.DataFrame:
        records = [{**members[m], "step": step, "layer": layer, "metric": metric, "value": v}
                   for step, layer, metric, values in self.blocks for m, v in enumerate(values)]
        df = pd.DataFrame.from_records(records)
        for k, v in reversed(job_columns.items()):
            df.insert(0, k, v)
        return df


def atomic_write(path: Path, write) -> None:
    """`write(tmp_path)` then rename over `path`: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text))


def write_json(path: Path, obj: dict) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    atomic_write(path, lambda p: df.to_parquet(p, index=False))


@contextlib.contextmanager
def job_lock(job_dir: Path):
    """An exclusive, non-blocking lock on a job directory; yields whether it was acquired.

    Two sweeps that share a job (the same command run twice at once) never run it twice. The
    kernel drops the lock when its process dies, even by SIGKILL, so a killed job is free to resume."""
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(job_dir / ".lock", os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def is_locked(job_dir: Path) -> bool:
    """Whether another process is running this job right now."""
    if not (Path(job_dir) / ".lock").exists():
        return False
    with job_lock(job_dir) as held:
        return not held


def config_hash(cfg: dict) -> str:
    """A stable hash of what determines a job's numbers (paths and logging excluded)."""
    keep = {k: v for k, v in cfg.items() if k not in ("paths", "logger")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_status(job_dir: Path) -> dict | None:
    f = Path(job_dir) / "status.json"
    return json.loads(f.read_text()) if f.exists() else None


class CollectError(RuntimeError):
    """The rows of a sweep do not match its status files."""


def collect(sweep_dir: Path) -> pd.DataFrame:
    """Concatenate the rows of every finished job under `sweep_dir`, checking them against status files."""
    sweep_dir = Path(sweep_dir)
    statuses = sorted(sweep_dir.rglob("status.json"))
    if not statuses:
        raise CollectError(f"{sweep_dir}: no job directories (no status.json) found")
    frames, failed = [], []
    for s in statuses:
        job_dir, status = s.parent, json.loads(s.read_text())
        table = job_dir / "metrics.parquet"
        if status["state"] not in COMPLETE:
            failed.append(f"{job_dir} ({status['state']})")
            continue
        if not table.exists():
            raise CollectError(f"{job_dir}: status is {status['state']} but metrics.parquet is missing")
        df = pd.read_parquet(table)
        members = df["member"].nunique() if len(df) else 0
        if members != status["members"] or (len(df) and df["job"].iloc[0] != status["job"]):
            raise CollectError(f"{table}: rows do not match status.json (members {members} vs "
                               f"{status['members']}, job {df['job'].iloc[0] if len(df) else None!r} vs {status['job']!r})")
        if df.duplicated(["member", "step", "layer", "metric"]).any():
            raise CollectError(f"{table}: duplicated (member, step, layer, metric) rows")
        frames.append(df)
    if not frames:
        raise CollectError(f"{sweep_dir}: no finished jobs; unfinished: {', '.join(failed)}")
    out = pd.concat(frames, ignore_index=True)
    for col in out.columns[out.dtypes == object]:  # a key swept over e.g. 8,null or 1,abc: one type for parquet
        if out[col].dropna().map(type).nunique() > 1:
            out[col] = out[col].map(lambda v: None if v is None else str(v))
    if out.duplicated(["experiment", "job", "member", "step", "layer", "metric"]).any():
        raise CollectError(f"{sweep_dir}: two job directories claim the same (experiment, job)")
    out.attrs["unfinished"] = failed
    return out
