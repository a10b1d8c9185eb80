"""The shape of the code: a new symmetry and a new model, written OUTSIDE the package (a module and
a YAML in a temp directory), run end to end through the real CLI into a tidy table."""
from __future__ import annotations

import os
import subprocess
import textwrap

import pandas as pd

from conftest import PYTHON, ROOT, cli_env

TRIPLE = '''
from dataclasses import dataclass

import torch

from symexp.components import Symmetry


@dataclass
class Triple(Symmetry):
    """theta = u * v * w: three factors, one more rescaling mirror than u * v."""

    name: str = "triple"
    structure = ("sparsity",)

    def factor(self, base, gen):
        rms = base.pow(2).mean().sqrt()
        draw = lambda: torch.randn(base.shape, generator=gen, dtype=base.dtype) * rms.sqrt() + 1.0
        return {"u": base.clone(), "v": draw(), "w": draw()}

    def compose(self, raw):
        return raw["u"] * raw["v"] * raw["w"]
'''

TWO_LAYER = '''
from dataclasses import dataclass

import torch
from torch import nn

from symexp.components import Model
from symexp.metrics import unit_vectors


class TwoLayer(nn.Module):
    def __init__(self, dim, width):
        super().__init__()
        self.inp, self.out = nn.Linear(dim, width, bias=False), nn.Linear(width, 1, bias=False)
        self.probes = {"hidden": ("units",)}

    def reset_parameters(self):
        self.inp.reset_parameters()
        self.out.reset_parameters()

    def forward(self, x):
        return self.out(torch.relu(self.inp(x))).squeeze(-1)

    def probe_views(self, theta):
        return {"hidden": unit_vectors(theta["inp.weight"], theta["out.weight"])}


@dataclass
class TwoLayerConfig(Model):
    name: str = "two_layer"
    width: int = 6
    reads = ("vector",)

    def build(self, data):
        return TwoLayer(data.x.shape[1], self.width)
'''


def _plugin_dir(tmp_path):
    pkg = tmp_path / "plugins"
    (pkg / "configs" / "symmetry").mkdir(parents=True)
    (pkg / "configs" / "model").mkdir(parents=True)
    (pkg / "triple_symmetry.py").write_text(textwrap.dedent(TRIPLE))
    (pkg / "two_layer_model.py").write_text(textwrap.dedent(TWO_LAYER))
    (pkg / "configs" / "symmetry" / "triple.yaml").write_text("_target_: triple_symmetry.Triple\nname: triple\n")
    (pkg / "configs" / "model" / "two_layer.yaml").write_text(
        "_target_: two_layer_model.TwoLayerConfig\nname: two_layer\nwidth: 6\n")
    return pkg


def _run(pkg, results, *overrides):
    env = dict(cli_env(), PYTHONPATH=os.pathsep.join([str(pkg), os.environ.get("PYTHONPATH", "")]))
    cmd = [PYTHON, "-m", "symexp.run", "experiment=fig1_left", f"hydra.searchpath=[file://{pkg / 'configs'}]",
           f"paths.results={results}", "compile=false", "data.n_train=100", "data.dim=10", "data.nonzero=3",
           "train.steps=60", "train.eval_every=30", "train.converge_tol=0", "references=[]",
           "ensemble.seeds=[0]", "ensemble.weight_decays=[0.0,0.2]", *overrides]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    (table,) = list(results.rglob("metrics.parquet"))
    return pd.read_parquet(table)


def test_a_symmetry_from_outside_the_package_runs_end_to_end(tmp_path):
    t = _run(_plugin_dir(tmp_path), tmp_path / "results", "symmetry=triple")
    assert set(t.symmetry) == {"triple"}
    # the symmetry's declared structure is measured on the weight, and decay shrinks the loss less than none
    sparsity = t[(t.metric == "sparsity/frac_zero@0.001") & (t.step == t.step.max())]
    assert len(sparsity) == 2 and sparsity.value.between(0, 1).all()
    loss = t[t.metric == "loss/train"].pivot_table(index="step", columns="weight_decay", values="value")
    assert loss[0.0].iloc[-1] < loss[0.0].iloc[0]  # it trains: three factors compose one weight


def test_a_model_from_outside_the_package_runs_end_to_end(tmp_path):
    t = _run(_plugin_dir(tmp_path), tmp_path / "results", "model=two_layer", "symmetry=plain")
    assert set(t.model) == {"two_layer"}
    units = t[(t.layer == "hidden") & (t.metric == "units/independent")]
    assert len(units) and units.value.between(1, 6).all()  # its own probes are measured


def test_an_unknown_plugin_option_is_one_line(tmp_path):
    pkg = _plugin_dir(tmp_path)
    r = subprocess.run([PYTHON, "-m", "symexp.run", "experiment=fig1_left", "symmetry=quadruple",
                        f"hydra.searchpath=[file://{pkg / 'configs'}]", f"paths.results={tmp_path}"],
                       cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "triple" in lines[0] and "rescaling" in lines[0], r.stderr
