"""REPORT.md is built from the files a run leaves, for swept and unswept experiments alike."""
from __future__ import annotations

import pandas as pd
from omegaconf import OmegaConf

from symexp import report
from symexp.claims import LEDGER_COLUMNS
from symexp.results import write_text


PAPER_PASS = dict(claim="C7", check="dcs_exact", kind="paper", table="dcs", statement="s | with a pipe",
                  measured=2e-16, op="<", threshold=1e-6, passed=True)
PAPER_FAIL = dict(claim="C6", check="coupled", kind="paper", table="transformer", statement="t", measured=2.0,
                  op="<=", threshold=0.0, passed=False)


def fake_sweep(results, exp, params):
    sweep = results / "runs" / "quick" / exp
    hydra = {"overrides": {"task": [f"experiment={exp}"]}, "sweeper": {"params": params}}
    write_text(sweep / "multirun.yaml", OmegaConf.to_yaml({"hydra": hydra}))
    for job in ("a", "b") if params else ("default",):
        write_text(sweep / job / "config.yaml", f"name: {exp}\njob: {job}\n")


JOBS = pd.DataFrame({"experiment": ["dcs", "transformer"], "job": ["a", "default"], "wall_s": [12.0, 60.0],
                     "measure_s": [0.1, 0.5]})
NO_JOBS = JOBS.iloc[:0]


def test_report_lists_claims_configs_and_timings(tmp_path):
    fake_sweep(tmp_path, "dcs", {"symmetry": "dcs,plain"})
    fake_sweep(tmp_path, "transformer", None)  # a single-job experiment: no sweeper params
    ledger = pd.DataFrame([PAPER_PASS, PAPER_FAIL], columns=LEDGER_COLUMNS)
    ledger.to_csv(tmp_path / "claims.csv", index=False)
    text = report.build(tmp_path, "quick", JOBS, 75.0, "make reproduce", "note")
    assert "2 checks: 1 pass, 1 fail" in text and "| C6 | coupled | 2 | 0 | **FAIL** |" in text
    assert "s \\| with a pipe" in text  # a pipe inside a statement does not break the table
    assert "`symmetry` ∈ {dcs,plain}" in text and "the 2 jobs differ only in the swept keys" in text
    assert "### `transformer` (60 job-seconds)" in text and "name: transformer" in text
    assert "Command: `python -m symexp.run -m experiment=dcs scale=quick`" in text
    assert "75 s (1.2 min)" in text and "torch" in text and "note" in text


def test_report_counts_the_papers_claims_apart(tmp_path):
    """A refuted hypothesis of ours and a failed control do not read as failed claims of the paper."""
    ledger = pd.DataFrame([PAPER_PASS, dict(PAPER_FAIL, passed=True),
                           dict(claim="C1", check="offset_control", kind="control", table="fig1_left",
                                statement="c", measured=0.9, op="<", threshold=0.5, passed=False),
                           dict(claim="C4", check="hypothesis", kind="informational", table="fig1_middle",
                                statement="i", measured=4.0, op="<=", threshold=0.0, passed=False)],
                          columns=LEDGER_COLUMNS)
    ledger.to_csv(tmp_path / "claims.csv", index=False)
    text = report.build(tmp_path, "quick", NO_JOBS, 1.0, "make reproduce")
    assert "4 checks: 2 pass, 2 fail; the paper's claims (2): 2 pass, 0 fail" in text
    claims = text.split("## Claims")[1].split("## Figures")[0]
    paper, control, info = claims.split("### ")[1:]
    assert paper.startswith("The paper's claims: 2 pass, 0 fail") and "| C6 | coupled | 2 | 0 | pass | <= 0 |" in paper
    assert ": 0 pass, 1 fail" in control and "| C1 | offset_control | 0.9 | 0.5 | **FAIL** | < 0.5 |" in control
    assert info.startswith("Informational") and "| C4 | hypothesis |" in info


def test_report_says_how_the_jobs_ran_and_what_was_cached(tmp_path, monkeypatch):
    """A fresh-machine time and a warm one differ by the compile cache: the report says which it was."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    assert report.inductor_cache_line() == f"empty ({tmp_path / 'inductor'})"
    (tmp_path / "inductor" / "fxgraph").mkdir(parents=True)
    (tmp_path / "inductor" / "fxgraph" / "entry").write_text("x")
    assert report.inductor_cache_line().startswith("1 files")
    pd.DataFrame([PAPER_PASS], columns=LEDGER_COLUMNS).to_csv(tmp_path / "claims.csv", index=False)
    jobs = pd.DataFrame({"experiment": ["dcs", "dcs", "transformer"], "job": ["a", "b", "default"],
                         "wall_s": [10.0, 30.0, 60.0], "measure_s": [1.0, 1.0, None],
                         "reference_s": [None, 2.0, None]})
    text = report.build(tmp_path, "quick", jobs, 1.0, "make reproduce", facts={"jobs": "2 worker process(es)"})
    assert "| jobs | 2 worker process(es) |" in text
    assert "| dcs | 2 | 40 | 30 | 5.0 % | 5.0 % |" in text and "| transformer | 1 | 60 | 60 | - | - |" in text


def test_report_says_which_experiments_ran_smaller_than_paper_scale(tmp_path):
    """Keys of configs/scaled/<exp>_paper.yaml (and the scaled files it extends) whose value differs in the run."""
    configs = tmp_path / "configs"
    write_text(configs / "scaled" / "base_paper.yaml", "# @package _global_\ntrain: {steps: 1000}\n")
    write_text(configs / "scaled" / "toy_paper.yaml", "# @package _global_\ndefaults:\n  - base_paper\n"
                                                      "ensemble: {seeds: [0, 1, 2], lrs: [0.1]}\n")
    write_text(configs / "scaled" / "same_paper.yaml", "# @package _global_\ntrain: {steps: 10}\n")
    for exp in ("toy", "same"):
        write_text(tmp_path / "runs" / "quick" / exp / "j" / "config.yaml",
                   "train: {steps: 10}\nensemble: {seeds: [0], lrs: [0.1]}\n")
    text = report.scale_section(tmp_path, "quick", ["toy", "same", "unrun"], configs=configs)
    assert "| toy | `train.steps` 10 (paper: 1000); `ensemble.seeds` 1 value (paper: 3 values) |" in text
    assert "| same |" not in text and "unrun" not in text
    assert report.scale_section(tmp_path, "paper", ["toy"], configs=configs) == ""
