"""Three outcomes: a row that rests on a failed (or unmeasured) premise is undecided, in the ledger, the
report's counts and the match against the reference; eta_eff * wd * T is computed and reported per arm."""
from __future__ import annotations

import math

import pandas as pd
import pytest

from symexp import report
from symexp.claims import LEDGER_COLUMNS, UNDECIDED, Check, ClaimError, evaluate, exposure, outcome
from symexp.results import write_text

TABLE = pd.DataFrame({"experiment": ["toy"], "value": [1.0]})


def checks(premise_value: float, applies: bool = True) -> list[Check]:
    premise = Check("P0", "rise", "premise", "plain shows it", lambda t: premise_value, 1.1, ">=",
                    applies=lambda t: applies)
    claim = Check("P1", "claim", "paper", "decay removes it", lambda t: 0.5, 1.0, "<", rests_on=("P0/rise",))
    free = Check("P2", "free", "control", "rests on nothing", lambda t: 2.0, 1.0, "<")
    return [premise, claim, free]


def by_check(rows):
    return {r["check"]: r for r in rows}


def test_a_failed_premise_leaves_its_rows_undecided_and_others_alone():
    held = by_check(evaluate(checks(1.5), TABLE, "toy"))
    assert held["rise"]["passed"] is True and held["claim"]["passed"] is True and held["free"]["passed"] is False
    failed = by_check(evaluate(checks(1.0), TABLE, "toy"))
    assert failed["rise"]["passed"] is False and failed["free"]["passed"] is False  # the control is decided
    assert failed["claim"]["passed"] == UNDECIDED and failed["claim"]["measured"] == 0.5  # the number is kept
    assert "undecided: premise P0/rise failed (1 >= 1.1 does not hold)" in failed["claim"]["statement"]
    nan = by_check(evaluate(checks(math.nan), TABLE, "toy"))
    assert nan["claim"]["passed"] == UNDECIDED
    unmeasured = by_check(evaluate(checks(1.5, applies=False), TABLE, "toy"))
    assert "rise" not in unmeasured and unmeasured["claim"]["passed"] == UNDECIDED
    assert "premise P0/rise was not measured" in unmeasured["claim"]["statement"]
    assert unmeasured["claim"]["rests_on"] == "P0/rise" and unmeasured["free"]["rests_on"] == ""


def test_rests_on_must_name_a_premise_of_the_module():
    bad = checks(1.5)[1:]  # the claim without its premise
    with pytest.raises(ClaimError, match=r"P1/claim: rests_on 'P0/rise' is not a premise.*allowed: none declared") as e:
        evaluate(bad, TABLE, "toy")
    assert "\n" not in str(e.value)
    with pytest.raises(ClaimError, match="a premise rests on nothing"):
        Check("P0", "x", "premise", "s", len, 0.0, "<", rests_on=("P0/y",))
    with pytest.raises(ClaimError, match="allowed: a tuple of 'claim/check' ids"):
        Check("P1", "x", "paper", "s", len, 0.0, "<", rests_on="P0/rise")


def test_outcome_reads_a_csv_round_trip(tmp_path):
    ledger = pd.DataFrame(evaluate(checks(1.0), TABLE, "toy"), columns=LEDGER_COLUMNS)
    ledger.to_csv(tmp_path / "claims.csv", index=False)
    back = pd.read_csv(tmp_path / "claims.csv")
    assert list(back.passed.map(outcome)) == ["fail", UNDECIDED, "fail"]
    assert outcome(True) == "pass" and outcome("False") == "fail"
    with pytest.raises(ClaimError, match="allowed: True, False, undecided"):
        outcome("maybe")


def test_report_and_reference_carry_three_outcomes(tmp_path):
    rows = evaluate(checks(1.0), TABLE, "toy")
    ledger = pd.DataFrame(rows, columns=LEDGER_COLUMNS)
    ledger.to_csv(tmp_path / "claims.csv", index=False)
    text = report.build(tmp_path, "quick", pd.DataFrame(columns=["experiment", "job", "wall_s", "measure_s"]), 1.0,
                        "make reproduce")
    claims = text.split("## Claims")[1].split("## Figures")[0]
    assert "3 checks: 0 pass, 2 fail, 1 undecided; the paper's claims (1): 0 pass, 0 fail, 1 undecided" in claims
    premise, paper, control = claims.split("### ")[1:]
    assert premise.startswith("Premises") and "| P0 | rise | 1 | 1.1 | **FAIL** |" in premise
    assert "| P1 | claim | 0.5 | 1 | undecided |" in paper
    decided = pd.DataFrame(evaluate(checks(1.5), TABLE, "toy"), columns=LEDGER_COLUMNS)
    differ, n = report.compare_with_reference(pd.read_csv(tmp_path / "claims.csv"), decided)
    assert n == 3 and differ == ["P0/rise: fail here, pass in the reference",
                                 "P1/claim: undecided here, pass in the reference"]


def test_exposure_and_the_reports_decay_table(tmp_path):
    assert exposure(0.01, 1e-3, 1_000_000) == pytest.approx(10.0)
    assert exposure(0.01, 1e-3, 1000, momentum=0.9) == pytest.approx(0.1)
    job = tmp_path / "runs" / "quick" / "toy" / "breaking=none"
    write_text(job / "config.yaml", "optim: {name: sgd, momentum: 0.5, schedule: cosine}\ntrain: {steps: 2000}\n"
                                    "ensemble: {lrs: [0.01], weight_decays: [0.0, 0.001, 0.1]}\n")
    write_text(tmp_path / "runs" / "quick" / "adam" / "j" / "config.yaml",
               "optim: {name: adam}\ntrain: {steps: 10}\nensemble: {lrs: [0.01], weight_decays: [0.1]}\n")
    text = report.decay_section(tmp_path, "quick", ["toy", "adam", "not_run"])
    # eta_eff = 0.01 / (1 - 0.5) * 1/2 (cosine's mean) = 0.01: wd 1e-3 -> 0.02, wd 0.1 -> 2 (wd 0 is not listed)
    assert "| toy | sgd lr 0.01, momentum 0.5, cosine schedule | 2000 | 0.01 | 0.001: 0.02, 0.1: 2 |" in text
    assert "| adam |" in text and "no single decay rate" in text


def test_posterior_rows_rest_on_collapse_and_convergence():
    """Every posterior-collapse row is undecided when the plain arm shows no collapsed latent, or has not
    converged to the closed-form optimum; decided when both premises hold."""
    from symexp.claims import posterior_collapse as pc
    from symexp.metrics import names

    def table(active: float, gap: float) -> pd.DataFrame:
        return pd.DataFrame([dict(experiment=pc.EXPERIMENT, job="none", member=0, seed=0, step=50, breaking="none",
                                  weight_decay=0.0, layer=names.beta_layer(1.0), metric=metric, value=v)
                             for metric, v in ((pc.ACTIVE, active), (pc.PREDICTED, active),
                                               (names.POSTERIOR_LOSS_GAP, gap))])
    decided = by_check(evaluate(pc.CHECKS, table(3.0, 0.0), "posterior_collapse"))
    assert decided["collapse_present"]["passed"] is True and decided["staircase"]["passed"] is True
    no_collapse = by_check(evaluate(pc.CHECKS, table(pc.LATENTS, 0.0), "posterior_collapse"))
    assert no_collapse["collapse_present"]["passed"] is False and no_collapse["staircase"]["passed"] == UNDECIDED
    unconverged = by_check(evaluate(pc.CHECKS, table(3.0, 0.5), "posterior_collapse"))
    assert unconverged["converged"]["kind"] == "premise" and unconverged["staircase"]["passed"] == UNDECIDED
