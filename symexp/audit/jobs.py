"""Audit a symexp job directory: every member of its weights.pt, with the model its config.yaml builds.
Files are read with torch.load(weights_only=True) only (symexp.audit.checkpoints)."""
from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import torch
import yaml
from torch import nn

from symexp.audit.core import measure, thresholds
from symexp.audit.discover import discover
from symexp.audit.checkpoints import read_tensors
from symexp.audit.errors import CheckpointError, first_line
from symexp.audit.trace import trace

Tensors = dict[str, torch.Tensor]
MEMBER_COLUMNS = ("seed", "weight_decay", "lr", "label_noise")


def read_job(job_dir: Path) -> tuple[dict, Tensors]:
    """config.yaml (resolved) and weights.pt ({name: [M, ...]}) of a finished job."""
    job_dir = Path(job_dir)
    cfg_path, w_path = job_dir / "config.yaml", job_dir / "weights.pt"
    if not cfg_path.is_file():
        raise CheckpointError(f"{job_dir}: not a symexp job directory (no config.yaml)")
    if not w_path.is_file():
        raise CheckpointError(f"{job_dir}: no weights.pt (the job has not finished; see its status.json)")
    try:
        config = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError as e:
        raise CheckpointError(f"{cfg_path}: not valid YAML ({first_line(e)})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{cfg_path}: not a mapping")
    return config, read_tensors(w_path)


def audit_job(job_dir: Path, **thresholds_) -> pd.DataFrame:
    """Audit every member of a symexp job; rows carry the member's seed, weight_decay, lr, label_noise.

    Thresholds default to the job's own `metrics:` (dead_tau, unit_tol, rank_tau, rank_atol), so counts
    agree with its metrics.parquet; with a breaking control the decay origin theta_0 is rebuilt."""
    from symexp.config import validate_parts
    from symexp.ensemble import Ensemble, member_table
    from symexp.run import template_model

    config, weights = read_job(job_dir)
    c, parts = validate_parts(config)
    model = template_model(c)
    theta = _fit_members(model, weights, Path(job_dir) / "weights.pt")
    own = {k: c["metrics"][k] for k in ("dead_tau", "unit_tol", "rank_tau", "rank_atol") if k in c["metrics"]}
    th = thresholds(**{**own, **thresholds_})
    members = member_table(c["ensemble"])
    theta0 = None
    if c["breaking"]["name"] != "none":
        dtype = getattr(torch, c["dtype"])
        # the offsets depend only on each member's seed and the shapes (the task only picks a loss)
        ens = Ensemble(copy.deepcopy(model), parts.symmetry, parts.breaking, members, "regression",
                       torch.device("cpu"), dtype)
        theta0 = ens.effective({k: torch.zeros_like(v) for k, v in ens.raw0.items()}, ens.fixed)
    task = getattr(parts.data, "task", "regression")
    found = discover(trace(model), softmax_output=task in ("classification", "language"))
    df = measure(found, theta, th, theta0)
    info = pd.DataFrame(members)[["member", *MEMBER_COLUMNS]]
    out = info.merge(df, on="member", how="right")
    out.insert(0, "experiment", c["name"])
    out.attrs = df.attrs
    return out


def _fit_members(model: nn.Module, weights: Tensors, path: Path) -> Tensors:
    own = dict(model.named_parameters())
    missing = [k for k in own if k not in weights]
    if missing:
        raise CheckpointError(f"{path}: does not fit the job's model: missing {', '.join(missing[:4])}")
    for k, p in own.items():
        if tuple(weights[k].shape[1:]) != tuple(p.shape):
            raise CheckpointError(f"{path}: {k} has shape {tuple(weights[k].shape)}; expected [M, {', '.join(map(str, p.shape))}]")
    return {k: weights[k] for k in own}
