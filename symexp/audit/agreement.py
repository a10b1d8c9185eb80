"""The audit beside an experiment's own metrics: the same weights, counted twice.

`make reproduce` audits the Figure 1 (right) MLP and the coupled-L2 transformer at the smallest and the
largest weight decay and checks that the audit's counts equal what the engine logged at the last step
(independent and dead units per hidden layer; the tau-rank of W_Q,h^T W_K,h per head).
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import yaml

from symexp.audit.jobs import audit_job
from symexp.metrics import names

COLUMNS = ["experiment", "job", "weight_decay", "member", "layer", "measure", "audit", "logged", "agree"]


def _logged_name(measure: str, metrics_cfg: dict) -> str:
    if measure == "independent_units":
        return names.INDEPENDENT_UNITS
    if measure == "dead_units":
        return names.DEAD_FRAC
    return names.tau_rank(metrics_cfg["rank_tau"], metrics_cfg.get("rank_atol", 0.0))


def _engine_layer(layer: str) -> str | None:
    """The engine's probe of an audited layer: layers.i -> hidden{i+1}; blocks.L.attn.hH -> L{L}.h{H}.qk."""
    if m := re.fullmatch(r"layers\.(\d+)", layer):
        return f"hidden{int(m.group(1)) + 1}"
    if m := re.fullmatch(r"blocks\.(\d+)\.attn\.h(\d+)", layer):
        return f"L{m.group(1)}.h{m.group(2)}.qk"
    return None


def agreement(job_dir: Path, measures=("independent_units", "dead_units", "qk_tau_rank")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the audit's rows, audit vs logged for the members at the smallest and largest weight decay)."""
    job_dir = Path(job_dir)
    audit = audit_job(job_dir)
    cfg = yaml.safe_load((job_dir / "config.yaml").read_text())
    logged = pd.read_parquet(job_dir / "metrics.parquet")
    last = logged[logged.step == logged.step.max()].set_index(["member", "layer", "metric"])["value"]
    wds = sorted(audit.weight_decay.unique())
    pick = audit[audit.weight_decay.isin({wds[0], wds[-1]}) & audit.measure.isin(measures)]
    rows = []
    for r in pick.itertuples():
        layer = _engine_layer(r.layer)
        key = (r.member, layer, _logged_name(r.measure, cfg["metrics"]))
        if layer is None:  # not a tensor the engine probes
            continue
        value = last.get(key, float("nan"))  # a metric the engine did not log under this name: no agreement
        value = value * r.of if r.measure == "dead_units" else value  # the engine logs a fraction
        rows.append([cfg["name"], job_dir.name, r.weight_decay, r.member, r.layer, r.measure, float(r.value),
                     float(value), abs(float(r.value) - float(value)) < 1e-6])
    return audit, pd.DataFrame(rows, columns=COLUMNS)
