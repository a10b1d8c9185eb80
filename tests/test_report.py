"""REPORT.md is built from the files a run leaves, for swept and unswept experiments alike."""
from __future__ import annotations

import pandas as pd
from omegaconf import OmegaConf

from symexp import report
from symexp.results import write_text


def fake_sweep(results, exp, params):
    sweep = results / "runs" / "quick" / exp
    hydra = {"overrides": {"task": [f"experiment={exp}"]}, "sweeper": {"params": params}}
    write_text(sweep / "multirun.yaml", OmegaConf.to_yaml({"hydra": hydra}))
    for job in ("a", "b") if params else ("default",):
        write_text(sweep / job / "config.yaml", f"name: {exp}\njob: {job}\n")


def test_report_lists_claims_configs_and_timings(tmp_path):
    fake_sweep(tmp_path, "dcs", {"symmetry": "dcs,plain"})
    fake_sweep(tmp_path, "transformer", None)  # a single-job experiment: no sweeper params
    ledger = pd.DataFrame([dict(claim="C7", check="dcs_exact", figure="dcs", statement="s | with a pipe",
                                measured=2e-16, threshold=1e-6, passed=True),
                           dict(claim="C6", check="coupled", figure="transformer", statement="t",
                                measured=2.0, threshold=0.0, passed=False)])
    ledger.to_csv(tmp_path / "claims.csv", index=False)
    text = report.build(tmp_path, "quick", {"dcs": 12.0, "transformer": 60.0}, 75.0, "make reproduce", "note")
    assert "1 of 2 checks pass" in text and "| C6 | coupled | 2 | 0 | **FAIL** |" in text
    assert "s \\| with a pipe" in text  # a pipe inside a statement does not break the table
    assert "`symmetry` ∈ {dcs,plain}" in text and "the 2 jobs differ only in the swept keys" in text
    assert "### `transformer` (60 s)" in text and "name: transformer" in text
    assert "75 s (1.2 min)" in text and "torch" in text and "note" in text
