"""Every config composes and validates; bad input fails in one line naming the key and what is allowed."""
from __future__ import annotations

import subprocess

import pytest
from omegaconf import open_dict

from conftest import CONFIGS, PYTHON, ROOT, cli_env
from symexp.config import ConfigError, validate

EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))
GROUPS = {p.name: sorted(q.stem for q in p.glob("*.yaml")) for p in CONFIGS.iterdir()
          if p.is_dir() and p.name not in ("hydra", "experiment", "scaled")}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("scale", ["quick", "paper"])
def test_every_experiment_composes_and_validates(make_cfg, experiment, scale):
    cfg = make_cfg(f"experiment={experiment}", f"scale={scale}")
    c = validate(cfg)
    assert c["name"] == experiment and c["scale"]["name"] == scale


# options that validate only beside a partner option of another group
PARTNERS = {("model", "transformer"): ["data=text"], ("data", "text"): ["model=transformer"],
            ("symmetry", "rotation"): ["model=matrix", "data=lowrank_map"],
            ("breaking", "residual"): ["symmetry=rotation", "model=matrix", "data=lowrank_map"],
            ("data", "fashion_mnist"): ["model=mlp"], ("data", "cifar10"): ["model=mlp"],
            ("model", "mlp"): ["data=fashion_mnist"], ("model", "resnet18"): ["data=fashion_mnist"],
            ("model", "matrix"): ["data=lowrank_map"], ("data", "lowrank_map"): ["model=matrix"]}


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUPS.items() for o in opts])
def test_every_group_option_composes(make_cfg, group, option):
    validate(make_cfg(f"{group}={option}", *PARTNERS.get((group, option), [])))


BAD = [
    # (overrides, key named in the message, an allowed value named in the message)
    (["+optim.foo=1"], "optim.foo", "momentum"),
    (["+bogus=1"], "bogus", "ensemble"),
    (["symmetry.name=rotatoin"], "symmetry.name", "rescaling"),
    (["model.name=resnet9000"], "model.name", "linear"),
    (["data.name=imagenet"], "data.name", "regression"),
    (["ensemble.weight_decays=[0.1,-0.01]"], "ensemble.weight_decays", ">= 0"),
    (["ensemble.lrs=[-0.1]"], "ensemble.lrs", "> 0"),
    (["ensemble.lrs=[0]"], "ensemble.lrs", "> 0"),
    (["ensemble.seeds=[]"], "ensemble.seeds", "at least one"),
    (["ensemble.label_noises=[-1]"], "ensemble.label_noises", ">= 0"),
    (["optim.batch_size=5000"], "optim.batch_size", "1..data.n_train"),
    (["optim.momentum=1.5"], "optim.momentum", "momentum < 1"),
    (["dtype=float16"], "dtype", "float64"),
    (["device=tpu"], "device", "cuda"),
    (["train.steps=0"], "train.steps", ">= 1"),
    (["train.steps=abc"], "train.steps", "int"),
    (["references=[lassso]"], "references", "lasso"),
    (["data.teacher=medium"], "data.teacher", "dense"),
    (["data.nonzero=1000"], "data.nonzero", "data.dim"),
    (["optim.schedule=linear"], "optim.schedule", "cosine"),
    (["breaking.scale=-1", "breaking=offset"], "breaking.scale", ">= 0"),
    (["breaking=residual", "symmetry=rescaling"], "breaking.name", "rotation"),
    (["symmetry=rotation", "model=linear"], "symmetry.name", "matrix"),
]


@pytest.mark.parametrize("overrides,key,allowed", BAD, ids=[b[1] + ":" + b[0][0] for b in BAD])
def test_bad_config_is_rejected_in_one_line(make_cfg, overrides, key, allowed):
    cfg = make_cfg(*overrides)
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    msg = str(e.value)
    assert "\n" not in msg and key in msg and allowed in msg, msg


def test_yaml_typo_in_a_section_is_rejected(make_cfg):
    cfg = make_cfg()
    with open_dict(cfg):
        cfg.train.stepz = 10  # what a typo in an experiment YAML produces after composition
    with pytest.raises(ConfigError, match=r"train\.stepz: unknown key; allowed keys: steps"):
        validate(cfg)


@pytest.mark.parametrize("arg,expect", [
    ("symmetry=rotatoin", "symmetry=rotatoin: unknown option; allowed: dcs, penalty, plain, rescaling, rotation"),
    ("ensemble.lrs=[-1]", "ensemble.lrs: -1 is not allowed"),
    ("+optim.foo=1", "optim.foo: unknown key"),
])
def test_cli_rejects_bad_input_before_training(tmp_path, arg, expect):
    r = subprocess.run([PYTHON, "-m", "symexp.run", "experiment=fig1_left", arg, f"paths.results={tmp_path}"],
                       cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and expect in lines[0], r.stderr
    assert not list(tmp_path.rglob("metrics.parquet"))
