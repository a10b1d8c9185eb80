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
            ("model", "matrix"): ["data=lowrank_map"], ("data", "lowrank_map"): ["model=matrix"],
            ("model", "linear_vae"): ["data=gaussian_spectrum"], ("data", "gaussian_spectrum"): ["model=linear_vae"],
            ("data", "balanced_fashion_mnist"): ["model=mlp"],
            ("data", "permuted_fashion_mnist"): ["model=mlp", "optim=sgd"],
            ("data", "random_label_fashion_mnist"): ["model=mlp", "optim=sgd"],
            ("data", "slowly_changing_regression"): ["optim=sgd"]}


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
    (["optim.schedule=linear"], "optim.schedule", "step"),
    (["experiment=neural_collapse", "model.loss=hinge"], "model.loss", "mse"),
    (["breaking.scale=-1", "breaking=offset"], "breaking.scale", ">= 0"),
    (["breaking=residual", "symmetry=rescaling"], "breaking.name", "rotation"),
    (["symmetry=rotation", "model=linear"], "symmetry.name", "matrix"),
    # sizes, counts and thresholds outside their meaningful range (issue 12)
    (["experiment=fig1_right", "model.widths=[0]"], "model.widths", ">= 1"),
    (["data.n_train=0"], "data.n_train", ">= 1"),
    (["experiment=fig1_right", "symmetry=rotation"], "symmetry.name", "matrix"),
    (["metrics.sparsity_tau=[2.0]"], "metrics.sparsity_tau", "0 < sparsity_tau < 1"),
    (["metrics.rank_tau=0"], "metrics.rank_tau", "0 < rank_tau < 1"),
    (["metrics.dead_tau=1.5"], "metrics.dead_tau", "< 1"),
    (["metrics.energy=0"], "metrics.energy", "0 < energy <= 1"),
    (["metrics.near_corr=1"], "metrics.near_corr", "< 1"),
    (["metrics.families=[curvature]"], "metrics.families", "sparsity"),
    (["metrics.train_subset=-1"], "metrics.train_subset", ">= 0"),
    (["train.eval_every=0"], "train.eval_every", ">= 1"),
    (["train.max_loss=0"], "train.max_loss", "> 0"),
    (["optim.batch_size=0", "optim=sgd"], "optim.batch_size", ">= 1"),
    (["experiment=fig1_right_resnet", "model.width=0"], "model.width", "> 0"),
    (["experiment=transformer", "model.n_head=3"], "model.n_head", "d_model"),
    (["experiment=transformer", "model.n_layer=0"], "model.n_layer", ">= 1"),
    (["experiment=transformer", "data.context=0"], "data.context", ">= 1"),
    (["experiment=transformer", "data.val_fraction=1.0"], "data.val_fraction", "< 1"),
    (["experiment=transformer", "optim.betas=[0.9,1.0]"], "optim.betas", "< 1"),
    (["experiment=fig1_middle", "symmetry.hidden=0"], "symmetry.hidden", ">= 1"),
    (["experiment=fig1_middle", "data.decay=0"], "data.decay", "0 < decay <= 1"),
    (["experiment=dcs", "symmetry=dcs", "symmetry.k=0"], "symmetry.k", ">= 1"),
    (["experiment=theory_invariance", "model.dead_units=9"], "model.width", "dead_units"),
    (["experiment=fig1_right", "data.n_test=0"], "data.n_test", ">= 1"),
    (["experiment=fig1_right", "data.pad=-1"], "data.pad", ">= 0"),
    (["breaking=mask", "breaking.mask_frac=0"], "breaking.mask_frac", "0 < mask_frac <= 1"),
    (["logger=wandb", "logger.mode=sometimes"], "logger.mode", "offline"),
    (["model=mlp"], "model.name", "fashion_mnist"),
    (["references=[spectrum]"], "references", "lowrank_map"),
    (["symmetry._target_=nowhere.Sym"], "symmetry._target_", "nowhere.Sym"),
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


@pytest.mark.parametrize("args,key", [
    (["experiment=fig1_right", "model.widths=[0]"], "model.widths"),
    (["experiment=fig1_left", "data.n_train=0"], "data.n_train"),
    (["experiment=fig1_right", "symmetry=rotation"], "symmetry.name"),
    (["experiment=fig1_right", "data.root=/nonexistent/dir"], "/nonexistent/dir"),
    (["experiment=fig1_left", "metrics.sparsity_tau=[2.0]"], "metrics.sparsity_tau"),
])
def test_cli_bad_input_is_one_line_with_exit_code_2(tmp_path, args, key):
    """The inputs that used to crash with a traceback (or, for tau = 2, train on silently)."""
    r = subprocess.run([PYTHON, "-m", "symexp.run", *args, f"paths.results={tmp_path}"],
                       cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=180)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and key in lines[0], r.stderr
    assert not list(tmp_path.rglob("metrics.parquet")) and not list(tmp_path.rglob("ckpt.pt"))
