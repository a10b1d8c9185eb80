"""Audit what is on disk: a symexp job directory (every member of its weights.pt) or a state_dict
checkpoint with the class that builds it. Files are read with torch.load(weights_only=True) only."""
from __future__ import annotations

import copy
import importlib
import pickle
from pathlib import Path

import pandas as pd
import torch
import yaml
from torch import nn

from symexp.audit.core import measure, thresholds
from symexp.audit.discover import discover
from symexp.audit.errors import AuditError, CheckpointError
from symexp.audit.trace import trace

Tensors = dict[str, torch.Tensor]
MEMBER_COLUMNS = ("seed", "weight_decay", "lr", "label_noise")


def read_tensors(path: Path) -> Tensors:
    """The name -> tensor dict in a checkpoint (also under 'state_dict' / 'model'); one clear error else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused by torch.load(weights_only=True) (it holds objects other than "
                              f"tensors and plain containers; save model.state_dict()): {_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - truncated zip, random bytes, wrong format: one line
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {_line(e)})") from None
    for key in (None, "state_dict", "model_state_dict", "model"):
        sd = obj if key is None else obj.get(key) if isinstance(obj, dict) else None
        if isinstance(sd, dict) and sd and all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
            return sd
    raise CheckpointError(f"{path}: holds no state_dict (a dict of name -> tensor, alone or under "
                          f"'state_dict' / 'model'); found {type(obj).__name__}")


def _line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or ["(no message)"])[0][:240]


def import_model(spec: str) -> nn.Module:
    """`pkg.module:Class` (or any no-argument callable returning an nn.Module) -> a fresh model."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise AuditError(f"--model {spec!r}: allowed form is pkg.module:Class")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise AuditError(f"--model {spec!r}: cannot import it ({type(e).__name__}: {_line(e)})") from None
    try:
        model = factory()
    except Exception as e:  # noqa: BLE001
        raise AuditError(f"--model {spec!r}: calling it with no arguments failed ({type(e).__name__}: {_line(e)})") from None
    if not isinstance(model, nn.Module):
        raise AuditError(f"--model {spec!r}: returned {type(model).__name__}, not a torch.nn.Module")
    return model


def load_into(model: nn.Module, sd: Tensors, path: Path, spec: str) -> None:
    """Load `sd` strictly; a mismatch is one line naming missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{name}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if keys]
        raise CheckpointError(f"{path}: does not fit {spec}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)


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
        raise CheckpointError(f"{cfg_path}: not valid YAML ({_line(e)})") from None
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
