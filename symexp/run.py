"""The Hydra entry point: one job = one architecture x symmetry x data, an ensemble of M members.

    python -m symexp.run experiment=fig1_left
    python -m symexp.run -m experiment=fig1_left symmetry=plain,rescaling
    python -m symexp.run -m experiment=fig1_left hydra/launcher=joblib

A job reads top-down: validate -> skip if done -> data -> ensemble -> train -> references ->
rows + status. Everything is written under the job's Hydra output dir, atomically.
"""
from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from symexp import checkpoint, results, theory
from symexp.config import unnamed_keys, validate_parts
from symexp.ensemble import Ensemble, member_table
from symexp.errors import ConfigError, UserError
from symexp.results import read_status, write_json, write_parquet, write_text
from symexp.rows import Rows
from symexp.train import train
from symexp.wandb_sink import NullSink, make_sink

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CORE_COLUMNS = ("symmetry", "breaking", "model", "data")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but no CUDA device is present; allowed here: auto, cpu")
    return torch.device(name)


def job_columns(c: dict, job: str, overrides: list[str]) -> dict:
    """Job-level columns of the tidy table: the core choices plus every swept key."""
    cols = {"experiment": c["name"], "job": job}
    cols.update({k: c[k]["name"] for k in CORE_COLUMNS})
    cols["batch_size"] = c["optim"]["batch_size"] or 0  # 0 = full batch
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key in cols or key.startswith("hydra") or "/" in key or key in unnamed_keys():
            continue
        value = OmegaConf.select(OmegaConf.create(c), key)
        cols[key] = value if value is None or isinstance(value, (int, float, str, bool)) else str(value)
    return cols


def run_job(cfg: DictConfig, out_dir: Path, job: str = "default", overrides: list[str] = (),
            multirun: bool = False, progress: bool = True) -> dict:
    """Run (or skip, or resume) one job in `out_dir`; return its status dict."""
    out_dir = Path(out_dir)
    c, parts = validate_parts(cfg)  # fail fast, before touching any file
    device, dtype = pick_device(c["device"]), getattr(torch, c["dtype"])
    torch.backends.cudnn.benchmark = device.type == "cuda"  # shapes are fixed per job: autotune convolutions once
    if c["compile"]:  # jobs of a sweep share a process: without a reset, dynamo's per-code cache limit (8)
        torch.compiler.reset()  # would send later jobs silently to eager
    with results.job_lock(out_dir) as held:
        if not held:  # the same job of a concurrent sweep: that process finishes it
            print(f"symexp: skip {job}: running in another process ({out_dir})", file=sys.stderr)
            return {"state": "busy", "job": job}
        return _run_locked(c, parts, device, dtype, out_dir, job, overrides, multirun, progress)


def job_hash(c: dict) -> str:
    """What identifies a job's numbers: everything but where its results are reported."""
    return results.config_hash({k: v for k, v in c.items() if k != "report"})


def _run_locked(c: dict, parts, device: torch.device, dtype: torch.dtype, out_dir: Path, job: str,
                overrides: list[str], multirun: bool, progress: bool) -> dict:
    h = job_hash(c)
    old = results.read_complete(out_dir)
    if old is not None:
        if old["config_hash"] != h:
            raise ConfigError(f"hydra output dir {out_dir} holds finished results of another config; "
                              f"choose another hydra.sweep.dir/hydra.run.dir (nothing was overwritten)")
        print(f"symexp: skip {job}: already {old['state']} in {out_dir}", file=sys.stderr)
        return old
    started = time.time()
    data = parts.data.build(device, dtype)  # a missing or corrupt data set stops here, before any file is written
    status = {"state": "running", "config_hash": h, "job": job, "experiment": c["name"], "started": started}
    write_text(out_dir / "config.yaml", OmegaConf.to_yaml(c))
    write_json(out_dir / "status.json", status)
    members, columns = member_table(c["ensemble"]), job_columns(c, job, overrides)
    sink, exit_code = NullSink(), 1
    try:
        # wandb: one group per sweep (its directory is runs/<scale>/<name>)
        group = f"{c['scale']['name']}/{c['name']}" + ("" if multirun else "/single")
        sink = make_sink(c["logger"], c, members, columns, group=group, job=job, out_dir=out_dir, run_id=h)
        ens = Ensemble(parts.model.build(data), parts.symmetry, parts.breaking, members, data.task, device, dtype)
        resume = checkpoint.load(out_dir, h)
        rows = Rows(resume["rows"] if resume else None)
        if resume is not None:  # a killed run of this job: continue from its last checkpoint
            status["resumed_from"] = resume["state"].step
            write_json(out_dir / "status.json", status)
        measure_s = 0.0  # evaluations, rows, the wandb mirror and checkpoints: what measuring costs the job
        for ev in train(ens, data, c, parts.optim.rule(), resume, progress=progress):
            tic = time.perf_counter()
            sink.log(ev.step, rows.extend(ev.step, ev.results))
            if ev.checkpoint:
                checkpoint.save(out_dir, h, ev.state, ev.batcher.state_dict(), rows.blocks)
            state, measure_s = ev.state, measure_s + ev.measure_s + time.perf_counter() - tic
        tic = time.perf_counter()  # closed forms from the data and the final weights, once a job: not measuring
        theta = ens.effective(state.raw, ens.fixed)
        sink.log(state.step, rows.extend(state.step, final_results(c, data, theta, members, state)))
        reference_s = time.perf_counter() - tic
        frame = rows.frame(members, columns)
        write_parquet(out_dir / "metrics.parquet", frame)
        checkpoint.save_weights(out_dir / "weights.pt", theta)
        n_div = int((~state.alive).sum())
        status.update(state="diverged" if n_div else "done", members=len(members), diverged=n_div, rows=len(frame),
                      steps=state.step, device=str(device), wall_s=round(time.time() - status["started"], 2),
                      measure_s=round(measure_s, 4), reference_s=round(reference_s, 4))
        write_json(out_dir / "status.json", status)
        (out_dir / "ckpt.pt").unlink(missing_ok=True)
        exit_code = 0
        return status
    except BaseException as e:
        write_text(out_dir / "error.txt", traceback.format_exc())
        status.update(state="failed", error=f"{type(e).__name__}: {e}")
        write_json(out_dir / "status.json", status)
        raise
    finally:
        sink.close(status, exit_code=exit_code)


def final_results(c: dict, data, theta: dict, members: list[dict], state) -> list:
    """The closed-form references of the final weight, and which members diverged."""
    final = theory.Final(data, theta["weight"] if c["references"] else None, [m["gamma"] for m in members],
                         [m["lr"] for m in members], c["optim"]["batch_size"], c["metrics"])
    out = [("weight", name, v) for kind in c["references"]
           for name, v in theory.REFERENCES[kind].compute(final).items()]
    return out + [("", "status/diverged", ~state.alive)]


def template_model(config: dict) -> torch.nn.Module:
    """The base module (CPU, float32) a job's config describes, e.g. to read its weights.pt back."""
    _, parts = validate_parts(OmegaConf.create(config))
    return parts.model.build(parts.data.build(torch.device("cpu"), torch.float32))


@hydra.main(version_base="1.3", config_path=str(CONFIGS), config_name="config")
def main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    multirun = hc.mode.name == "MULTIRUN"
    out, job = Path(hc.runtime.output_dir), hc.job.override_dirname or "default"
    try:
        run_job(cfg, out, job=job, overrides=list(hc.overrides.task), multirun=multirun)
    except UserError as e:
        what = "config error" if isinstance(e, ConfigError) else "error"
        if os.environ.get("SYMEXP_DEBUG"):
            traceback.print_exc()
        if not multirun:
            print(f"symexp: {what}: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        record_failure(out, f"{type(e).__name__}: {e}\n")
        print(f"symexp: job {job}: {what}: {e}", file=sys.stderr)
    except Exception as e:
        if not multirun:
            raise
        # the other jobs go on; symexp.sweep_report lists this one at the end and sets the exit code
        record_failure(out, traceback.format_exc())
        print(f"symexp: job {job} failed: {type(e).__name__}: {e} (traceback: {out / 'error.txt'})", file=sys.stderr)


def record_failure(out: Path, text: str) -> None:
    """error.txt for a job that failed before run_job could record it; never in another job's directory."""
    if read_status(out) is None:
        write_text(out / "error.txt", text)


def search_dirs(argv: list[str]) -> list[Path]:
    """configs/ and every directory of a `hydra.searchpath=[...]` override (file:// or plain paths)."""
    dirs = [CONFIGS]
    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "hydra.searchpath":
            for item in value.strip("[]").split(","):
                item = item.strip().strip("'\"")
                if item and not item.startswith("pkg://"):
                    dirs.append(Path(item.removeprefix("file://")))
    return dirs


def preflight(argv: list[str]) -> None:
    """Reject an unknown config-group option (e.g. symmetry=rotatoin) in one line, before Hydra."""
    dirs = search_dirs(argv)
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if not sep or key.startswith("hydra") or not (CONFIGS / key).is_dir() or value in ("null", ""):
            continue
        if "(" in value:  # glob(), choice(), range(): Hydra's sweep syntax, checked by Hydra itself
            continue
        options = sorted({p.stem for d in dirs for p in (d / key).glob("*.yaml")})
        for v in value.split(","):
            if v not in options:
                print(f"symexp: config error: {key}={v}: unknown option; allowed: {', '.join(options)}",
                      file=sys.stderr)
                raise SystemExit(2)


if __name__ == "__main__":
    # run the importable copy of this module: launchers (joblib, submitit) then pickle `main` by
    # reference instead of by value with every global it touches (some, like torch.backends.cudnn, cannot be)
    from symexp import run

    run.preflight(sys.argv[1:])
    run.main()
