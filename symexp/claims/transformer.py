"""C6 (paper.md 4, appendix "transformer"; protocol ours): double rotation -> low-rank attention. With
Adam + coupled L2 (what the theory covers) the ranks of each layer's W_Q^T W_K fall monotonically with
weight decay and collapse at the largest; AdamW's decoupled decay is outside the theory (informational).

Ranks are read with the floor metrics.rank_atol (singular values <= atol count as 0) when the table has
floored names. The experiment's floor was set after a prototype run in which heads that decay drove to
sigma_1 ~ 1e-5..1e-11 read as high relative rank; the unfloored ranks are reported beside them
(checks *_nofloor, informational).
"""
from __future__ import annotations

import pandas as pd

from symexp.claims import Check, ClaimError, final, has, largest_rise, select
from symexp.metrics import names

COUPLED, DECOUPLED = "transformer", "transformer_adamw"
LABELS = {COUPLED: "Adam + coupled L2 (γ = wd/2)", DECOUPLED: "AdamW, decoupled decay (outside the theory)"}
TAU = 1e-3  # metrics.rank_tau the claims read
RAW_RANK, RAW_ERANK = names.tau_rank(TAU), names.erank()
VAL = names.LOSS_TEST
COLLAPSE = 0.5  # "collapsed": rank at the largest wd at most this fraction of the rank at wd = 0


def floored(table: pd.DataFrame, raw: str) -> str:
    """The floored variant of metric `raw` (`raw,atol@<atol>`) when the table has one, else `raw`."""
    variants = sorted(m for m in table.metric.unique() if m != raw and names.unfloored(m) == raw)
    return variants[0] if variants else raw


def layers(table: pd.DataFrame) -> list[str]:
    """The layer-level probes, L0, L1, ... (not per head)."""
    return sorted({p.split(".")[0] for p in table.layer.unique() if p.startswith("L")}, key=lambda s: int(s[1:]))


def curve(table: pd.DataFrame, layer: str, metric: str) -> pd.Series:
    """Mean over seeds of `metric` on probe `layer`, indexed by weight decay."""
    return table[(table.layer == layer) & (table.metric == metric)].groupby("weight_decay")["value"].mean()


def head_curve(table: pd.DataFrame, layer: str, metric: str, product: str = "qk") -> pd.Series:
    """Mean over heads and seeds of `metric` on the per-head products `layer.h*.product`."""
    heads = table[table.layer.str.match(rf"{layer}\.h\d+\.{product}$") & (table.metric == metric)]
    return heads.groupby("weight_decay")["value"].mean()


def _final(table: pd.DataFrame, experiment: str, metric: str) -> pd.DataFrame:
    """The experiment's last-step rows; ClaimError when it never logged `metric`."""
    t = final(table[table.experiment == experiment])
    select(t, experiment, metric)
    return t


def _metric(table: pd.DataFrame, experiment: str, raw: str, floor: bool) -> str:
    return floored(table[table.experiment == experiment], raw) if floor else raw


def _series(table: pd.DataFrame, experiment: str, metric: str, per_head: bool) -> dict[str, pd.Series]:
    """Per layer: the seed-mean final `metric` of W_Q^T W_K (mean over heads if per_head) vs wd."""
    t = _final(table, experiment, metric)
    found = layers(t)
    if not found:
        raise ClaimError(f"metric {metric!r} of experiment {experiment!r}: no layer probes L0, L1, ...")
    if per_head:
        return {layer: head_curve(t, layer, metric).sort_index() for layer in found}
    return {layer: curve(t, f"{layer}.qk", metric).sort_index() for layer in found}


def _fmt(series: dict[str, pd.Series]) -> str:
    return "; ".join(f"{k}: " + ", ".join(f"{v:.3g}" for v in s.values) for k, s in series.items())


def _monotone(experiment: str, check: str, kind: str, what: str, raw: str, per_head: bool = False,
              floor: bool = True) -> Check:
    """Largest rise between neighbouring wd, max over layers (<= 0: non-increasing in wd)."""
    def series(t):
        return _series(t, experiment, _metric(t, experiment, raw, floor), per_head)

    def detail(t):
        e = final(t[t.experiment == experiment])
        wds = ", ".join(f"{w:g}" for w in sorted(e.weight_decay.unique()))
        return (f"[{_metric(t, experiment, raw, floor)}] {e.seed.nunique()} seed(s), wd ∈ [{wds}]; "
                f"per layer: {_fmt(series(t))}")

    def applies(t):  # the unfloored twin of a check exists only when the table has floored ranks
        return has(experiment)(t) and (floor or _metric(t, experiment, raw, True) != raw)

    return Check("C6", check, kind, f"{LABELS[experiment]}: {what} (mean over seeds) is non-increasing in wd: "
                 "largest rise between neighbouring wd, max over layers",
                 lambda t: max(largest_rise(s.values) for s in series(t).values()), threshold=0.0, op="<=",
                 applies=applies, detail=detail)


def collapse_ratio(table: pd.DataFrame, experiment: str) -> float:
    """tau-rank of W_Q^T W_K at the largest wd / at wd = 0, worst layer."""
    series = _series(table, experiment, _metric(table, experiment, RAW_RANK, True), per_head=False)
    return float(max(s.iloc[-1] / s.iloc[0] for s in series.values()))


def _validation(table: pd.DataFrame, experiment: str) -> str:
    val = select(final(table[table.experiment == experiment]), experiment, VAL)
    val = val.groupby("weight_decay")["value"].mean().sort_index()
    return (f"validation loss {val.iloc[0]:.3f} (wd 0) -> {val.iloc[-1]:.3f} (wd {val.index[-1]:g}), per wd: "
            + ", ".join(f"{v:.3f}" for v in val.values))


def _checks(experiment: str, tag: str, kind: str) -> list[Check]:
    qk, head = "τ-rank of each layer's W_QᵀW_K", "per-head τ-rank of W_Q,hᵀW_K,h (mean over heads)"
    erank = "erank of each layer's W_QᵀW_K"
    nofloor = " without the floor (the floor was set after a prototype run)"
    return [
        _monotone(experiment, f"{tag}_tau_rank", kind, qk, RAW_RANK),
        _monotone(experiment, f"{tag}_head_tau_rank", kind, head, RAW_RANK, per_head=True),
        _monotone(experiment, f"{tag}_erank", kind, erank, RAW_ERANK),
        _monotone(experiment, f"{tag}_tau_rank_nofloor", "informational", qk + nofloor, RAW_RANK, floor=False),
        _monotone(experiment, f"{tag}_erank_nofloor", "informational", erank + nofloor, RAW_ERANK, floor=False),
        Check("C6", f"{tag}_collapse", kind,
              f"{LABELS[experiment]}: τ-rank of W_QᵀW_K at the largest wd / at wd = 0, worst layer",
              lambda t: collapse_ratio(t, experiment), threshold=COLLAPSE, op="<=", applies=has(experiment),
              detail=lambda t: _validation(t, experiment)),
    ]


CHECKS = _checks(COUPLED, "coupled", "paper") + _checks(DECOUPLED, "adamw", "informational")
