"""The wandb mirror of a job: one wandb run per ensemble member. Local parquet stays the truth.

A member's run carries its own hyperparameters (seed, weight_decay, gamma, lr, label_noise), the job's
columns (experiment, symmetry, breaking, model, data, every swept key) and the job config under
`config`; `group` = the sweep, `job_type` = the condition, metric keys `<layer>/<metric>`, and a
summary of final values plus `status` (done | diverged | failed). No means over members: wandb's own
grouping averages runs that share hyperparameters. Above `logger.max_member_runs` members (measured
cost: scripts/bench_wandb.py) a job gets one `job` run holding a `members` table (members x final
metrics) plus member runs for an evenly spread sample of `logger.sampled_member_runs` members.

Resume: the run ids and the last logged step live in <job dir>/wandb/symexp-sink.json, so a resumed
job reopens the same runs (resume="allow"; offline, a second file per run that `wandb sync` replays in
order) and never logs a step twice. The id salt in that file keeps a rerun of the same config in a
fresh directory from merging into old runs.

Any wandb failure (broken install, unwritable dir, no network online) prints one line and turns the
sink into a no-op; nothing here ever raises into the job. Runs are always finished in `close()`,
which the runner calls in a `finally` block, so no run leaks into the next job of a multirun
(wandb#1314, anchors.md C).
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

MEMBER_KEYS = ("member", "seed", "weight_decay", "gamma", "lr", "label_noise")
MAX_MEMBER_RUNS = 128  # default of logger.max_member_runs: ~0.1 s and ~0.1 MB per run offline (bench_wandb.py)
SAMPLED_MEMBER_RUNS = 8  # default of logger.sampled_member_runs
STATE_FILE = "symexp-sink.json"
# wandb server limits that offline mode does not check, so a sync would fail later (wandb#6402)
JOB_TYPE_MAX, NAME_MAX = 64, 128


def is_off(logger_cfg: dict) -> bool:
    return logger_cfg.get("name", "none") == "none" or logger_cfg.get("mode") == "disabled"


def warn(what: str, err: BaseException) -> None:
    first_line = (str(err).strip().splitlines() or [""])[0][:200]
    print(f"symexp: wandb mirror off ({what}): {type(err).__name__}: {first_line}; "
          "local results are unaffected", file=sys.stderr)


def clip(text: str, limit: int) -> str:
    """`text` if short enough, else its head plus a hash of the whole (still unique, still readable)."""
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[:limit - 9]}~{digest}"


def metric_key(layer: str, metric: str) -> str:
    return f"{layer}/{metric}" if layer else metric


def member_status(job_state: str, diverged: float | None) -> str:
    if job_state == "failed" or diverged is None:
        return "failed"
    return "diverged" if diverged > 0.5 else "done"


def spread_sample(members: list[dict], k: int) -> list[int]:
    """k members evenly spread over the hyperparameter grid, from the smallest to the largest values."""
    order = sorted(range(len(members)), key=lambda m: tuple(
        members[m].get(key, 0) for key in ("weight_decay", "lr", "label_noise", "seed")))
    if k >= len(order):
        return sorted(order)
    if k <= 1:
        return order[:k]
    return sorted({order[round(i * (len(order) - 1) / (k - 1))] for i in range(k)})


class NullSink:
    def log(self, step: int, blocks: list) -> None:
        pass

    def close(self, status: dict | None = None, exit_code: int = 0) -> None:
        pass


class WandbSink(NullSink):
    """Member runs (and, above the limit, a job run with the members table) of one job."""

    def __init__(self, logger_cfg: dict, config: dict, members: list[dict], columns: dict, group: str,
                 job: str, out_dir: Path, run_id: str):
        import wandb  # only here: with logger=none wandb is never imported

        self.wandb, self.members = wandb, members
        self.state_path = Path(out_dir) / "wandb" / STATE_FILE
        self.state = self._load_state(run_id)
        limit = int(logger_cfg.get("max_member_runs", MAX_MEMBER_RUNS))
        sampled = int(logger_cfg.get("sampled_member_runs", SAMPLED_MEMBER_RUNS))
        table_mode = len(members) > limit
        self.run_members = spread_sample(members, sampled) if table_mode else list(range(len(members)))
        self.runs: dict[int, object] = {}
        self.job_run = None
        common = dict(project=logger_cfg.get("project", "symexp"), entity=logger_cfg.get("entity"),
                      mode=logger_cfg.get("mode", "offline"), dir=str(out_dir), group=clip(group, NAME_MAX),
                      job_type=clip(job, JOB_TYPE_MAX), resume="allow", reinit="create_new")
        # one process holds M runs: no console capture, system-metrics sampler or pip freeze per member
        # (the freeze was 2/3 of wandb.init; versions are in the summary run and REPORT.md)
        settings = wandb.Settings(console="off", x_disable_stats=True, x_save_requirements=False, silent=True)
        name = f"{columns.get('experiment', '')}/{job}"
        try:
            for m in self.run_members:
                run_config = {**columns, **{k: members[m].get(k) for k in MEMBER_KEYS}, "kind": "member",
                              "members_in_job": len(members), "config": config}
                self.runs[m] = wandb.init(id=f"{self.state['prefix']}-m{m}", name=clip(f"{name}/m{m}", NAME_MAX),
                                          config=run_config, settings=settings, **common)
            if table_mode:
                job_config = {**columns, "kind": "job", "members_in_job": len(members),
                              "sampled_members": self.run_members, "config": config}
                self.job_run = wandb.init(id=f"{self.state['prefix']}-job", name=clip(name, NAME_MAX),
                                          config=job_config, settings=settings, **common)
        except BaseException:
            self._finish_all(exit_code=1, quiet=True)
            raise
        print(f"symexp: wandb {common['mode']}: {len(self.runs) + (self.job_run is not None)} runs of job "
              f"{job} in {self.state_path.parent}", file=sys.stderr)

    def _load_state(self, run_id: str) -> dict:
        if self.state_path.exists():
            state = json.loads(self.state_path.read_text())
            if state.get("run_id") == run_id:
                return state
        state = {"run_id": run_id, "prefix": f"{run_id}-{secrets.token_hex(2)}", "step": -1, "keys": [],
                 "finals": {}}
        self._save_state(state)
        return state

    def _save_state(self, state: dict) -> None:
        # rename is atomic, so a kill leaves the old cursor or the new one; no fsync per eval (it was
        # half the sink's own time): after a power loss the worst case is a step logged twice
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".{STATE_FILE}.tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state_path)

    def log(self, step: int, blocks: list) -> None:
        st = self.state
        if step < st["step"]:
            return  # logged by an earlier process of this (resumed) job
        done_here = set(st["keys"]) if step == st["step"] else set()
        fresh = [(metric_key(layer, metric), values) for _, layer, metric, values in blocks
                 if metric_key(layer, metric) not in done_here]
        if not fresh:
            return
        for m, run in self.runs.items():
            run.log({key: values[m] for key, values in fresh}, step=step)
        st["finals"].update(dict(fresh))
        st["keys"] = sorted(done_here | {key for key, _ in fresh})
        st["step"] = step
        self._save_state(st)

    def close(self, status: dict | None = None, exit_code: int = 0) -> None:
        state = (status or {}).get("state") or ("done" if exit_code == 0 else "failed")
        finals = self.state["finals"]
        diverged = finals.get("status/diverged")
        statuses = [member_status(state, diverged[m] if diverged else None) for m in range(len(self.members))]
        for m, run in self.runs.items():
            run.summary.update({**{key: values[m] for key, values in finals.items()}, "status": statuses[m]})
        if self.job_run is not None:
            self.job_run.log({"members": self.members_table(statuses)})
            job_facts = {k: v for k, v in (status or {}).items() if k in ("steps", "wall_s", "device")}
            self.job_run.summary.update({**job_facts, "status": state, "members": len(self.members),
                                         "diverged": statuses.count("diverged")})
        self._finish_all(exit_code)

    def members_table(self, statuses: list[str]):
        finals = self.state["finals"]
        keys = sorted(finals)
        columns = [*MEMBER_KEYS, "status", *keys]
        rows = [[self.members[m].get(k) for k in MEMBER_KEYS] + [statuses[m]] + [finals[k][m] for k in keys]
                for m in range(len(self.members))]
        return self.wandb.Table(columns=columns, data=rows)

    def _finish_all(self, exit_code: int, quiet: bool = False) -> None:
        runs = [*self.runs.values(), *([self.job_run] if self.job_run is not None else [])]
        self.runs, self.job_run = {}, None
        errors = []
        for run in runs:
            try:
                run.finish(exit_code=exit_code)
            except Exception as e:  # finish every other run before reporting
                errors.append(e)
        if errors and not quiet:
            raise errors[0]


class GuardedSink(NullSink):
    """Forwards to a sink; the first exception prints one line and turns it into a no-op for good."""

    def __init__(self, sink: NullSink, job: str):
        self.sink, self.job = sink, job

    def _call(self, what: str, fn) -> None:
        try:
            fn()
        except Exception as e:
            warn(f"job {self.job}, {what}", e)
            broken, self.sink = self.sink, NullSink()
            if isinstance(broken, WandbSink):
                broken._finish_all(exit_code=1, quiet=True)

    def log(self, step: int, blocks: list) -> None:
        self._call("log", lambda: self.sink.log(step, blocks))

    def close(self, status: dict | None = None, exit_code: int = 0) -> None:
        self._call("close", lambda: self.sink.close(status, exit_code))
        self.sink = NullSink()


def make_sink(logger_cfg: dict, config: dict, members: list[dict], columns: dict, group: str, job: str,
              out_dir: Path, run_id: str) -> NullSink:
    """The job's wandb mirror, or a no-op sink (logger=none, mode=disabled, or wandb failed to start)."""
    if is_off(logger_cfg):
        return NullSink()
    try:
        sink = WandbSink(logger_cfg, config, members, columns, group, job, out_dir, run_id)
    except Exception as e:  # ImportError of a broken install included
        warn(f"job {job}, init", e)
        return NullSink()
    return GuardedSink(sink, job)


def summary_run(logger_cfg: dict, scale: str, ledger_csv: Path, figures: list[Path], software: dict) -> None:
    """One run per reproduce: every figure (PNG) as a wandb.Image, the claim ledger as a wandb.Table and the
    software/device table in its config. Written under the ledger's directory; never raises."""
    if is_off(logger_cfg):
        return
    ledger_csv = Path(ledger_csv)
    run = None
    try:
        import pandas as pd
        import wandb

        from symexp.claims import outcome

        ledger = pd.read_csv(ledger_csv)
        run = wandb.init(project=logger_cfg.get("project", "symexp"), entity=logger_cfg.get("entity"),
                         mode=logger_cfg.get("mode", "offline"), dir=str(ledger_csv.parent),
                         name=f"{scale}/summary", group=f"{scale}/summary", job_type="summary",
                         config={"kind": "summary", "scale": scale, "software": software},
                         reinit="create_new", settings=wandb.Settings(console="off", silent=True))
        images = {f"figures/{Path(f).stem}": wandb.Image(str(f)) for f in figures
                  if Path(f).suffix.lower() in (".png", ".jpg", ".jpeg")}  # a PDF is not an image to wandb
        run.log({"claims": wandb.Table(dataframe=ledger), **images})
        outcomes = ledger["passed"].map(outcome) if "passed" in ledger else None
        run.summary.update({"checks": len(ledger), "figures": len(images),
                            "checks_passed": None if outcomes is None else int((outcomes == "pass").sum()),
                            "checks_undecided": None if outcomes is None else int((outcomes == "undecided").sum())})
        run.finish()
        print(f"symexp: wandb {logger_cfg.get('mode', 'offline')}: summary run of scale {scale} with "
              f"{len(images)} figures in {ledger_csv.parent / 'wandb'}", file=sys.stderr)
    except Exception as e:
        warn(f"summary run of scale {scale}", e)
        if run is not None:
            try:
                run.finish(exit_code=1)
            except Exception:  # reported above; the report on disk is complete without wandb
                pass
