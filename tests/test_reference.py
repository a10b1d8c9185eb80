"""The committed results/reference is what a fresh SCALE=quick run gives: pass/fail of its claims
is reproduced, and its report was generated (not hand-edited) from a run of the current figures."""
from __future__ import annotations

import subprocess

import pandas as pd

from conftest import PYTHON, ROOT, cli_env
from symexp import experiments
from symexp.report import compare_with_reference, ledger_tables

REFERENCE = ROOT / "results" / "reference"
# rerun here: the table whose quick sweep is cheapest; `make reproduce` compares every claim
RERUN = "dcs"


def test_reference_covers_every_figure_and_claim():
    ledger = pd.read_csv(REFERENCE / "claims.csv")
    tables = experiments.discover().tables.values()
    with_claims = {t.name for t in tables if t.claims}
    assert set(ledger_tables(ledger)) == with_claims, "refresh results/reference with `make reference`"
    report = (REFERENCE / "REPORT.md").read_text()
    for name in (t.name for t in tables if t.plot):
        assert (REFERENCE / "figures" / f"{name}.png").stat().st_size > 10_000
        assert f"](figures/{name}.png)" in report
    assert report.count("| pass |") + report.count("| **FAIL** |") + report.count("| undecided |") == len(ledger)


def test_fresh_quick_run_reproduces_reference_pass_fail(tmp_path):
    r = subprocess.run([PYTHON, "scripts/reproduce.py", "--only", RERUN, "--results", str(tmp_path)],
                       cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    ledger = pd.read_csv(tmp_path / "claims.csv")
    reference = pd.read_csv(REFERENCE / "claims.csv")
    differ, compared = compare_with_reference(ledger, reference)
    assert compared == (ledger_tables(reference) == RERUN).sum() > 0
    assert not differ, differ
