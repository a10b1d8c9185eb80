"""The experiment registry (the experiment YAMLs' `report:` blocks): its one-line errors, Hydra's own
sweep sizes, and a new experiment with one claim, defined entirely outside the package, run end to end
through the real command line."""
from __future__ import annotations

import os
import subprocess
import textwrap

import pandas as pd
import pytest

from conftest import PYTHON, ROOT, cli_env
from symexp import experiments
from symexp.experiments import RegistryError, discover, sweep_size

TOY = "toy_loss"
TOY_YAML = f"""\
# @package _global_
defaults:
  - override /data: regression
  - override /model: linear
  - override /symmetry: rescaling
  - override /optim: gd

name: {TOY}
report:
  claims: toy_claims
data: {{n_train: 100, dim: 10, nonzero: 3}}
train: {{steps: 300, eval_every: 100}}
ensemble: {{seeds: [0, 1], weight_decays: [0.0, 0.2], lrs: [0.05]}}
"""
TOY_CLAIMS = f"""\
from symexp.claims import Check, final, select
from symexp.metrics import names


def loss_ratio(table):
    rows = select(table, "{TOY}", names.LOSS_TRAIN)
    first = rows[rows.step == 0].set_index(["job", "member"])["value"]
    return (final(rows).set_index(["job", "member"])["value"] / first).max()


CHECKS = [Check("X1", "trains", "paper", "GD lowers the train loss: final / initial, worst member",
                loss_ratio, threshold=0.5, op="<")]
"""


def write_experiment(root, name: str, body: str) -> None:
    (root / "experiment").mkdir(parents=True, exist_ok=True)
    (root / "experiment" / f"{name}.yaml").write_text(textwrap.dedent(body))


def test_packaged_registry_tables_figures_and_claims():
    registry = discover()
    assert list(registry.tables) == sorted(registry.tables)  # a stable order
    assert registry.tables["fig1_left"].experiments == ("fig1_left", "fig1_left_noise")
    assert registry.tables["transformer"].experiments == ("transformer", "transformer_adamw")
    assert set(registry.experiments) == {p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml")}
    for table in registry.tables.values():
        assert callable(experiments.draw_function(table)) and experiments.checks(table), table.name


@pytest.mark.parametrize("body, match", [
    ("name: other\n", r"toy\.yaml: name: 'other' must equal the file's stem 'toy'"),
    ("name: toy\nreport: {tabel: t}\n", r"toy\.yaml: report\.tabel: unknown key; allowed: table, plot, claims"),
    ("name: toy\nreport: {plot: [a]}\n", r"toy\.yaml: report\.plot: .* must be a string or null"),
])
def test_bad_experiment_yaml_is_one_line(tmp_path, body, match):
    write_experiment(tmp_path, "toy", body)
    with pytest.raises(RegistryError, match=match) as e:
        discover([tmp_path])
    assert "\n" not in str(e.value)


def test_experiments_sharing_a_table_must_agree(tmp_path):
    write_experiment(tmp_path, "toy_a", "name: toy_a\nreport: {table: toy, plot: mod.a}\n")
    write_experiment(tmp_path, "toy_b", "name: toy_b\nreport: {table: toy, plot: mod.b}\n")
    with pytest.raises(RegistryError, match=r"toy_b\.yaml: report\.plot 'mod\.b' differs from 'mod\.a' of "
                                            r"experiment 'toy_a', which shares table 'toy'"):
        discover([tmp_path])
    write_experiment(tmp_path, "toy_b", "name: toy_b\nreport: {table: toy, plot: mod.a}\n")
    table = discover([tmp_path]).tables["toy"]
    assert table.experiments == ("toy_a", "toy_b") and table.plot == "mod.a" and table.claims is None
    write_experiment(tmp_path, "dcs", "name: dcs\n")
    with pytest.raises(RegistryError, match="experiment 'dcs' is also defined in"):
        discover([tmp_path])


def test_sweep_sizes_come_from_hydra(tmp_path):
    write_experiment(tmp_path, "toy", """\
        # @package _global_
        name: toy
        hydra:
          sweeper:
            params:
              train.steps: range(0,5)
              symmetry: plain,rescaling
        """)
    registry = discover([tmp_path])
    assert sweep_size(registry, "toy", "quick") == 10
    assert sweep_size(registry, "toy", "quick", ["symmetry=plain"]) == 5  # an override replaces a swept key
    assert sweep_size(registry, "toy", "quick", ["symmetry=glob(*)"]) == 5 * len(
        list((ROOT / "configs" / "symmetry").glob("*.yaml")))
    assert sweep_size(registry, "fig1_left", "quick") == 8
    assert sweep_size(registry, "transformer_adamw", "quick") == 1
    # paper scale: the scaled/ layer's sweep, inherited through its own defaults list
    assert sweep_size(registry, "transformer_adamw", "paper") == 3
    # the convnet: its symmetric job alone, one per seed at paper scale; its controls per (breaking, seed)
    assert [sweep_size(registry, "fig1_right_resnet", s) for s in ("quick", "paper")] == [1, 3]
    assert [sweep_size(registry, "fig1_right_resnet_controls", s) for s in ("quick", "paper")] == [2, 6]


def run(*args, env=None, ok=True, timeout=300):
    r = subprocess.run([PYTHON, *args], cwd=ROOT, env=env or cli_env(), capture_output=True, text=True,
                       timeout=timeout)
    assert (r.returncode == 0) == ok, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def test_new_experiment_with_one_claim_end_to_end(tmp_path):
    """configs, claims module and results all live in tmp_path; nothing under symexp/ or configs/ changes."""
    configs, results = tmp_path / "configs", tmp_path / "results"
    write_experiment(configs, TOY, TOY_YAML)
    (tmp_path / "toy_claims.py").write_text(TOY_CLAIMS)
    env = dict(cli_env(), PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    run("-m", "symexp.run", "-m", f"experiment={TOY}", f"hydra.searchpath=[file://{configs}]",
        f"paths.results={results}", env=env)
    table = results / "tables" / f"{TOY}.parquet"
    run("-m", "symexp.cli", "collect", str(results / "runs" / "quick" / TOY), "-o", str(table), env=env)
    ledger = results / "claims.csv"
    run("-m", "symexp.cli", "claims", "--configs", str(configs), "--tables", str(results / "tables"),
        "--out", str(ledger), env=env)
    row = pd.read_csv(ledger).set_index(["claim", "check"]).loc["X1", "trains"]
    rows = pd.read_parquet(table)
    loss = rows[rows.metric == "loss/train"].pivot_table(index=["job", "member"], columns="step", values="value")
    assert row.measured == pytest.approx((loss[loss.columns.max()] / loss[0]).max(), rel=1e-12)
    assert (row.kind, row.op, row.threshold, row.table) == ("paper", "<", 0.5, TOY)
    assert row.passed == (row.measured < 0.5) and row.passed

    # the same experiment with a claim on a metric it never logs and a figure that raises (drawn on a
    # worker process beside the claims): reproduce fails, naming both
    bad = tmp_path / "bad"
    write_experiment(bad, TOY, TOY_YAML.replace("claims: toy_claims", "claims: toy_bad_claims\n  plot: toy_bad_plot"))
    (tmp_path / "toy_bad_claims.py").write_text(TOY_CLAIMS.replace("names.LOSS_TRAIN", "names.tau_rank(0.5)"))
    (tmp_path / "toy_bad_plot.py").write_text("def draw(table, out_dir):\n    raise RuntimeError('no axes today')\n")
    r = run("scripts/reproduce.py", "--only", TOY, "--configs", str(bad), "--results", str(results), env=env,
            ok=False)
    assert "skip" in r.stderr  # the finished jobs were not rerun: `report` is not part of a job's identity
    assert f"metric 'rank/tau@0.5' is not in the table for experiment '{TOY}'" in r.stderr
    assert f"reproduce: plot {TOY}: RuntimeError: no axes today" in r.stderr
    assert f"failed steps: plot {TOY}, claims" in r.stderr
