"""Shared fixtures: the real configs composed with Hydra's compose API, shrunk to test size."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
PYTHON = sys.executable


@pytest.fixture
def make_cfg(tmp_path):
    """compose(overrides) -> the real composed config, writing under tmp_path, eager (no compile)."""

    def _make(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            return compose("config", overrides=[f"paths.results={tmp_path}", "compile=false", *overrides])

    yield _make
    GlobalHydra.instance().clear()


def cli_env() -> dict:
    """Environment for subprocess runs: quiet, offline, CPU threads bounded."""
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", HYDRA_FULL_ERROR="0")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def ledger_rows(table_name: str, table) -> list[dict]:
    """The claim-ledger rows of one table's declared checks (symexp.claims.<table_name>.CHECKS)."""
    import importlib

    from symexp.claims import evaluate

    return evaluate(importlib.import_module(f"symexp.claims.{table_name}").CHECKS, table, table_name)


LEDGER_KEYS = {"claim", "check", "statement", "measured", "threshold", "passed"}  # plus kind, table, op
