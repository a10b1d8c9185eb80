"""Local files are the truth: tidy rows in parquet, a status file per job, written atomically.

A job directory holds
    config.yaml       the resolved config
    metrics.parquet   tidy rows (experiment, job, member, seed, weight_decay, ..., step, layer, metric, value)
    status.json       {"state": running | done | diverged | failed, "config_hash", "members", "diverged", ...}
    ckpt.pt           the last resumable checkpoint (removed when the job ends; symexp.checkpoint)
    weights.pt        the final effective weights (symexp.checkpoint.save_weights)
    error.txt         the traceback of a failed job
    .lock             held (flock) while a process runs the job

A file of these that cannot be read back (a crash mid-write on a full disk, a bad copy) is renamed
aside as <name>.corrupt-<n>, never deleted, with one stderr line, and the job starts afresh; `collect`
names such a file in one line instead.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from symexp.errors import FileError

COMPLETE = ("done", "diverged")
STATES = ("running", "failed") + COMPLETE
TABLE_COLUMNS = ("experiment", "job", "member", "step", "layer", "metric", "value")


def atomic_write(path: Path, write) -> None:
    """`write(tmp_path)` then rename over `path`: readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:  # on disk before the rename: a crash then leaves the old file, not half a new one
            os.fsync(f.fileno())
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


def one_line(e: BaseException, path: Path | None = None) -> str:
    """An exception as one short line: pyarrow's and torch's messages span several sentences and
    lines, and some repeat the file's path, which the caller's message already names."""
    lines = str(e).strip().splitlines()
    first = lines[0] if lines else ""
    if path is not None and str(path) in first:
        first = first.split(str(path))[-1].lstrip("': ")
    first = first.split(". ")[0]
    first = first if len(first) <= 160 else first[:157] + "..."
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def set_aside(path: Path) -> Path:
    """Rename a bad file to <name>.corrupt-<n> (the first free n) beside it; return the new path."""
    path = Path(path)
    n = 0
    while (aside := path.with_name(f"{path.name}.corrupt-{n}")).exists():
        n += 1
    os.replace(path, aside)
    return aside


def parse_status(f: Path) -> dict:
    """A status.json, checked: FileError names the file and what is wrong."""
    try:
        status = json.loads(Path(f).read_text())
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FileError(f"{f}: unreadable status ({one_line(e, f)})") from None
    if not isinstance(status, dict) or status.get("state") not in STATES:
        raise FileError(f"{f}: not a status file (needs a 'state' in {', '.join(STATES)})")
    need = {"config_hash": str, "job": str, "members": int} if status["state"] in COMPLETE else {}
    for key, kind in need.items():
        if not isinstance(status.get(key), kind):
            raise FileError(f"{f}: a {status['state']} status needs '{key}' ({kind.__name__})")
    return status


def read_status(job_dir: Path) -> dict | None:
    """The job's status, or None when it has none. A corrupt one is set aside with one stderr line:
    the job then starts afresh."""
    f = Path(job_dir) / "status.json"
    if not f.exists():
        return None
    try:
        return parse_status(f)
    except FileError as e:
        print(f"symexp: {e}; kept aside as {set_aside(f).name}; the job starts afresh", file=sys.stderr)
        return None


def read_parquet(path: Path) -> pd.DataFrame:
    """A parquet table, or FileError naming the file in one line (never pyarrow's traceback)."""
    try:
        return pd.read_parquet(path)
    except Exception as e:  # pyarrow raises several types (ArrowInvalid, OSError, ...) for bad bytes
        raise FileError(f"{path}: unreadable parquet ({one_line(e, path)})") from None


def read_table(table: Path, status: dict) -> pd.DataFrame:
    """A finished job's metrics.parquet, checked against its status; FileError names the file."""
    if not table.exists():
        raise FileError(f"{table}: missing, but status.json says {status['state']}")
    df = read_parquet(table)
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise FileError(f"{table}: missing column(s) {', '.join(missing)}")
    members, jobs = df["member"].nunique(), sorted(map(str, df["job"].unique()))
    if members != status["members"] or jobs != [status["job"]]:
        raise FileError(f"{table}: rows do not match status.json (members {members} vs {status['members']}, "
                        f"jobs {jobs} vs [{status['job']!r}])")
    if df.duplicated(["member", "step", "layer", "metric"]).any():
        raise FileError(f"{table}: duplicated (member, step, layer, metric) rows")
    if "rows" in status and len(df) != status["rows"]:  # a table silently shorter than the job wrote
        raise FileError(f"{table}: {len(df)} rows, status.json says {status['rows']}")
    return df


def read_complete(out_dir: Path) -> dict | None:
    """The status of a finished job (done or diverged) whose rows read back; None when the job is to run.

    An unreadable status.json, or a finished one whose metrics.parquet is missing, corrupt or does not
    match it, is not trusted: both files are set aside (a table nothing vouches for is never
    overwritten) with one stderr line, and the job starts afresh."""
    f, table = Path(out_dir) / "status.json", Path(out_dir) / "metrics.parquet"
    if not f.exists():
        return None
    try:
        status = parse_status(f)
        if status["state"] not in COMPLETE:
            return None
        read_table(table, status)
    except FileError as e:
        kept = [set_aside(p).name for p in (f, table) if p.exists()]
        print(f"symexp: {e}; kept aside as {', '.join(kept)}; the job starts afresh", file=sys.stderr)
        return None
    return status


class CollectError(FileError):
    """The rows of a sweep do not match its status files, or one of them cannot be read."""


def collect(sweep_dir: Path) -> pd.DataFrame:
    """Concatenate the rows of every finished job under `sweep_dir`, checking them against status files.

    A bad file stops it with one line naming the file (never a shorter table): rerunning the sweep
    sets that file aside and redoes its job."""
    sweep_dir = Path(sweep_dir)
    statuses = sorted(sweep_dir.rglob("status.json"))
    if not statuses:
        raise CollectError(f"{sweep_dir}: no job directories (no status.json) found")
    frames, failed = [], []
    for s in statuses:
        try:
            status = parse_status(s)
            if status["state"] not in COMPLETE:
                failed.append(f"{s.parent} ({status['state']})")
                continue
            frames.append(read_table(s.parent / "metrics.parquet", status))
        except FileError as e:
            raise CollectError(f"{e}; rerun the sweep to redo that job (the bad file is then kept aside)") from None
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
