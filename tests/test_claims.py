"""Declarative checks: `passed` is the declared comparison, a missing metric is one clear error, a
check about an unrun cell is left out, and every check of the reference ledger is declared once."""
from __future__ import annotations

import itertools
import math

import pandas as pd
import pytest

from conftest import ROOT
from symexp import experiments
from symexp.claims import OPS, Check, ClaimError, evaluate, select
from symexp.claims import fig1_middle, fig1_right
from symexp.metrics import names
from symexp.report import ledger_tables

# checks whose pass rule was restated as `measured <op> threshold` (their measured quantity changed)
RESTATED = {("C4", "residual_full_rank_gamma0"), ("T3", "batch_trend")}


def tidy(experiment: str, rows: list[dict], **job) -> pd.DataFrame:
    """A tidy table of final-step rows, one member per row unless given."""
    base = dict(experiment=experiment, job="j", member=0, seed=0, step=10, layer="", **job)
    return pd.DataFrame([{**base, **r} for r in rows])


def test_passed_is_the_declared_comparison():
    table = tidy("toy", [dict(metric=names.LOSS_TRAIN, value=1.0)])
    for op, value in itertools.product(OPS, [0.5, 1.0, 2.0, math.nan]):
        check = Check("X1", "c", "paper", "s", lambda t, v=value: v, threshold=1.0, op=op)
        row = evaluate([check], table, "toy")[0]
        expected = {"<": value < 1, "<=": value <= 1, ">": value > 1, ">=": value >= 1, "==": value == 1}[op]
        assert row["passed"] is expected, (op, value)
        assert (row["op"], row["threshold"], row["kind"], row["table"]) == (op, 1.0, "paper", "toy")
    assert not any(Check("X1", "nan", "paper", "s", lambda t: math.nan, 0.0, op).passes(math.nan) for op in OPS)


@pytest.mark.parametrize("field, value, allowed", [("kind", "claim", "premise, paper, control, informational"),
                                                   ("op", "=<", "<, <=, >, >=, ==")])
def test_bad_kind_or_op_is_one_line(field, value, allowed):
    args = dict(claim="X1", check="c", kind="paper", statement="s", measure=len, threshold=0.0, op="<")
    with pytest.raises(ClaimError, match=f"X1/c: {field} '{value}'.*allowed: {allowed}") as e:
        Check(**{**args, field: value})
    assert "\n" not in str(e.value)


def test_missing_metric_names_the_metric_and_the_experiment():
    """A run with metrics.rank_tau = 1e-2 logs rank/tau@0.01: the C4 checks read rank/tau@0.001."""
    table = tidy(fig1_middle.NOISE, [dict(metric=names.tau_rank(1e-2), value=3.0, gamma=0.0, lr=0.1,
                                          batch_size=4, breaking="none")])
    check = next(c for c in fig1_middle.CHECKS if c.check == "noise_monotone")
    with pytest.raises(ClaimError) as e:
        check.row(table, "fig1_middle")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("fig1_middle: C4/noise_monotone: ")
    assert "'rank/tau@0.001'" in msg and "'fig1_middle_noise'" in msg and "rank/tau@0.01" in msg
    with pytest.raises(ClaimError, match="no rows of experiment 'other'"):
        select(table, "other", names.LOSS_TRAIN)


def test_fig1_right_checks_measure_the_drop_and_skip_unrun_cells():
    """Independent units 100 -> 80 (symmetric) and 50 -> 50 (offset) over wd 0 -> 0.03, two layers, two
    seeds; no mask control and no ResNet in the table: their checks are left out, not failed."""
    rows = []
    for (brk, start, end), layer, seed in itertools.product([("none", 100, 80), ("offset", 50, 50)],
                                                            fig1_right.MLP_LAYERS, (0, 1)):
        for wd, units in ((0.0, start), (0.01, (start + end) / 2), (0.03, end)):
            rows.append(dict(job=f"{brk},{wd}", member=seed, seed=seed, breaking=brk, weight_decay=wd,
                             layer=layer, metric=names.INDEPENDENT_UNITS, value=units))
    ledger = {r["check"]: r for r in evaluate(fig1_right.CHECKS, tidy(fig1_right.MLP, rows), "fig1_right")}
    assert set(ledger) == {f"fig1_right/{layer}/{c}" for layer in fig1_right.MLP_LAYERS
                           for c in ("drop", "monotone", "broken")}
    drop, broken = ledger["fig1_right/hidden1/drop"], ledger["fig1_right/hidden2/broken"]
    assert drop["measured"] == pytest.approx(0.2) and drop["passed"] and drop["kind"] == "paper"
    assert broken["measured"] == 0.0 and broken["passed"] and broken["kind"] == "control"
    assert ledger["fig1_right/hidden1/monotone"]["measured"] == -10.0


def test_every_reference_check_is_declared_once_with_its_threshold():
    """Every check of the committed reference ledger is still declared, with the same threshold."""
    registry = experiments.discover()
    reference = pd.read_csv(ROOT / "results" / "reference" / "claims.csv")
    declared = [c for name in sorted(set(ledger_tables(reference))) for c in experiments.checks(registry.table(name))]
    ids = [(c.claim, c.check) for c in declared]
    assert len(ids) == len(set(ids))
    assert set(zip(reference.claim, reference.check)) <= set(ids)
    by_id = {(c.claim, c.check): c for c in declared}
    for r in reference.itertuples():
        if (r.claim, r.check) not in RESTATED:
            assert by_id[r.claim, r.check].threshold == r.threshold, (r.claim, r.check)
    kinds = {k: {i for i, c in by_id.items() if c.kind == k} for k in ("paper", "control", "informational")}
    assert {("C4", "residual_full_rank_gamma0"), ("C6", "adamw_collapse")} <= kinds["informational"]
    assert {("C1", "offset_control"), ("C8", "hessian_block_rotated")} <= kinds["control"]
    assert {("C1", "support"), ("C6", "coupled_collapse"), ("T3", "threshold_B4")} <= kinds["paper"]
