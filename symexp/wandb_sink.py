"""The wandb mirror of a job's rows. Local parquet stays the truth; wandb is optional and offline-safe.

One wandb run per job (group = sweep, job_type = condition), per-member keys `m<k>/<layer>/<metric>`
plus the mean over live members under `mean/...`. The run is always finished in `close()`, which the
runner calls in a `finally` block, so a crashing job never leaks its run into the next job of a
multirun (wandb#1314, anchors.md C).
"""
from __future__ import annotations

import os
from pathlib import Path


class NullSink:
    def log(self, step: int, blocks: list) -> None:
        pass

    def close(self, summary: dict | None = None, exit_code: int = 0) -> None:
        pass


class WandbSink(NullSink):
    def __init__(self, lcfg: dict, config: dict, group: str, name: str, job_type: str, out_dir: Path, run_id: str):
        # Hydra and wandb's default process start can hang together (anchors.md C); threads avoid it.
        os.environ.setdefault("WANDB_START_METHOD", "thread")
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=lcfg["project"], entity=lcfg["entity"], mode=lcfg["mode"], config=config,
            group=group, name=name, job_type=job_type, dir=str(out_dir), id=run_id, resume="allow",
            reinit="create_new",
        )

    def log(self, step: int, blocks: list) -> None:
        payload = {}
        for _, layer, metric, values in blocks:
            key = f"{layer}/{metric}" if layer else metric
            payload.update({f"m{m}/{key}": v for m, v in enumerate(values)})
            finite = [v for v in values if v == v]
            if finite:
                payload[f"mean/{key}"] = sum(finite) / len(finite)
        self.run.log(payload, step=step)

    def close(self, summary: dict | None = None, exit_code: int = 0) -> None:
        if summary:
            self.run.summary.update(summary)
        self.run.finish(exit_code=exit_code)


def make_sink(lcfg: dict, config: dict, group: str, name: str, job_type: str, out_dir: Path, run_id: str):
    if lcfg["name"] == "none" or lcfg["mode"] == "disabled":
        return NullSink()
    return WandbSink(lcfg, config, group, name, job_type, out_dir, run_id)
