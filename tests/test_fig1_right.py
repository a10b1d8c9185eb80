"""Figure 1 (right): image data wiring, the MLP's unit probes on constructed cases, a tiny end-to-end
job with features and correlations, the figure + C5 claims drawn from its table, and the ResNet's
controls read from their own experiment (fig1_right_resnet_controls)."""
from __future__ import annotations

import pandas as pd
import pytest
import torch

from symexp.checkpoint import load_weights
from symexp.config import ConfigError, validate, validate_parts
from symexp.data.image_sets import ImageSet
from symexp.data.images import DataNotFound
from symexp.ensemble import Ensemble, member_table
from symexp.models.mlp import MLP
from symexp.claims import fig1_right as claims
from symexp.metrics import names
from symexp.plots import fig1_right
from symexp.run import run_job
from symexp.symmetry import breaking
from symexp.evaluation.weights import measure
from conftest import LEDGER_KEYS, ledger_rows
from tests.test_images import require_fashion_mnist

MCFG = {"unit_tol": 0.1, "dead_tau": 0.1, "constraint": {"k": 0}}
IMAGES = dict(root=None, fallback=None, n_train=256, n_test=64, augment=False, pad=4, flip=True)


def test_mlp_units_count_duplicates_once_and_detect_dead():
    torch.manual_seed(0)
    mlp = MLP(6, [5], 3, "relu")
    theta = {k: v.detach().clone()[None] for k, v in mlp.named_parameters()}  # one member
    w1, b1, w2 = theta["layers.0.weight"], theta["layers.0.bias"], theta["layers.1.weight"]
    for t in (w1[0], b1[0], w2[0].T):  # views: rows of W1 and b1, columns of W2
        t[1] = t[0]  # unit 1 duplicates unit 0 exactly
        t[2] = 1.01 * t[0]  # unit 2 within the tolerance
        t[4] = 0.0  # unit 4 is dead
    out = measure(mlp.probe_views(theta)["hidden1"], ("units",), MCFG)
    assert out["units/independent"].tolist() == [2.0]  # {0, 1, 2} and {3}
    assert out["units/dead_frac"].tolist() == [pytest.approx(0.2)]


def test_fashion_mnist_is_wired_into_build_data():
    require_fashion_mnist()
    data = ImageSet(name="fashion_mnist", **IMAGES).build(torch.device("cpu"), torch.float32)
    assert data.task == "classification" and data.x.shape == (256, 1, 28, 28) and data.x_test.shape == (64, 1, 28, 28)
    assert data.y.dtype == torch.int64 and len(data.classes) == 10 and data.augment is None
    assert abs(data.x.mean().item()) < 0.2  # normalised with train-set statistics (of the subset)


def test_cifar_missing_falls_back_with_one_message(tmp_path, capsys):
    cfg = dict(IMAGES, name="cifar10", root=str(tmp_path))
    with pytest.raises(DataNotFound, match="cifar-10-batches-py"):
        ImageSet(**cfg).build(torch.device("cpu"), torch.float32)
    require_fashion_mnist()
    data = ImageSet(**dict(cfg, fallback="fashion_mnist")).build(torch.device("cpu"), torch.float32)
    assert data.source == "fashion_mnist" and data.x.shape[1:] == (1, 28, 28)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path) in err and "falling back to fashion_mnist" in err


@pytest.mark.parametrize("override, match", [("model=linear", "cannot read images"),
                                             ("ensemble.label_noises=[0.5]", "label noise"),
                                             ("data.n_test=0", "data.n_test")])
def test_bad_image_configs_fail_in_one_line(make_cfg, override, match):
    with pytest.raises(ConfigError, match=match) as e:
        validate(make_cfg("experiment=fig1_right", override))
    assert "\n" not in str(e.value)


TINY = ["experiment=fig1_right", "data.n_train=512", "data.n_test=64", "model.widths=[16,16]",
        "train.steps=8", "train.eval_every=4", "metrics.train_subset=128", "ensemble.seeds=[0]",
        "ensemble.weight_decays=[0.0,0.03]"]


def test_tiny_job_figure_and_claims(make_cfg, tmp_path):
    require_fashion_mnist()
    for brk in ("none", "offset"):
        run_job(make_cfg(*TINY, f"breaking={brk}"), tmp_path / brk, job=f"breaking={brk}",
                overrides=[f"breaking={brk}"], progress=False)
    table = pd.concat([pd.read_parquet(tmp_path / b / "metrics.parquet") for b in ("none", "offset")])
    last = table[table.step == 8]
    for metric, layer in (("units/independent", "hidden1"), ("units/dead_frac", "hidden2"), ("acc/test", ""),
                          ("features/near_identical@0.99", "penultimate")):
        assert len(last[(last.metric == metric) & (last.layer == layer)]) == 4, metric
    corr = table[table.metric.str.startswith("corr/")]
    assert set(corr.step) == {8} and len(corr) == 4 * 16 * 15 // 2  # final step only, i < j, every member
    assert corr.value.abs().max() <= 1.0
    paths = fig1_right.draw(table, tmp_path / "fig")
    assert all(p.exists() for p in paths)
    rows = ledger_rows("fig1_right", table)
    assert {r["check"] for r in rows} >= {"fig1_right/hidden1/drop", "fig1_right/hidden2/broken"}
    assert all(set(r) >= LEDGER_KEYS for r in rows)


def test_mask_control_pins_distinct_values_in_every_row(make_cfg, tmp_path):
    """W-Asym: in each weight matrix ceil(mask_frac * fan_in) entries per row hold fixed values for the
    whole run (whatever the gradient and the decay do), no two rows alike; biases are not pinned."""
    raw = {"fc.weight.w": torch.randn(6, 16, dtype=torch.float64), "fc.bias.w": torch.randn(6, dtype=torch.float64)}
    fixed = breaking.Mask(scale=0.05, mask_frac=0.125).offsets(raw, torch.Generator().manual_seed(0))
    pinned, pins = fixed["fc.weight.w" + breaking.PINNED], fixed["fc.weight.w" + breaking.VALUES]
    assert pinned.sum(1).tolist() == [2] * 6 and not fixed["fc.bias.w" + breaking.PINNED].any()
    values = {tuple(pins[i][pinned[i]].tolist()) for i in range(6)}
    assert len(values) == 6 and all(v != 0 for row in values for v in row)
    theta = breaking.shifted(raw, fixed)
    assert torch.equal(theta["fc.weight.w"][pinned], pins[pinned])
    assert torch.equal(theta["fc.weight.w"][~pinned], raw["fc.weight.w"][~pinned])
    assert torch.equal(theta["fc.bias.w"], raw["fc.bias.w"])

    require_fashion_mnist()
    cfg = make_cfg(*TINY, "breaking=mask", "ensemble.weight_decays=[0.0,0.3]")
    run_job(cfg, tmp_path / "mask", progress=False)
    (c, parts), cpu = validate_parts(cfg), torch.device("cpu")
    data = parts.data.build(cpu, torch.float32)
    ens = Ensemble(parts.model.build(data), parts.symmetry, parts.breaking, member_table(c["ensemble"]),
                   data.task, cpu, torch.float32)
    first = [k for k in ens.raw0 if k + breaking.PINNED in ens.fixed][0]
    pinned = ens.fixed[first + breaking.PINNED]  # [M, out, in]
    w0 = ens.effective(ens.raw0, ens.fixed)[first.rsplit(".", 1)[0]]
    w = load_weights(tmp_path / "mask" / "weights.pt")[first.rsplit(".", 1)[0]]
    assert torch.equal(w[pinned], w0[pinned]) and not torch.equal(w[~pinned], w0[~pinned])


RESNET_WDS = (0.0, 5e-4, 3e-3, 1e-2, 3e-2)


def unit_rows(experiment: str, breaking: str, units: dict, layers=("layer1.0", "layer2.0")) -> list[dict]:
    """Final-step independent units (per layer) and test accuracy of one job: {wd: units per layer}."""
    job = f"{experiment}:breaking={breaking}"
    rows = []
    for member, (wd, n) in enumerate(units.items()):
        base = dict(experiment=experiment, job=job, member=member, seed=0, step=10, breaking=breaking, weight_decay=wd)
        rows += [dict(base, layer=layer, metric=names.INDEPENDENT_UNITS, value=n) for layer in layers]
        rows.append(dict(base, layer="", metric=names.ACC_TEST, value=0.8))
    return rows


def resnet_table(controls: bool = True) -> pd.DataFrame:
    """The ResNet's main job (16 -> 12 units summed over two layers: drop 0.25); control rows left in the
    main experiment as before the split (drop 0.5), which the checks must ignore; and, when `controls`,
    the controls experiment at wd = 0 and 0.03: offset 16 -> 16 (drop 0), mask 16 -> 15.5 (drop 1/32)."""
    rows = unit_rows(claims.RESNET, "none", dict(zip(RESNET_WDS, (8, 8, 7.5, 7, 6))))
    rows += unit_rows(claims.RESNET, "offset", dict(zip(RESNET_WDS, (8, 8, 6, 5, 4))))
    if controls:
        rows += unit_rows(claims.RESNET_CONTROLS, "offset", {0.0: 8, 3e-2: 8})
        rows += unit_rows(claims.RESNET_CONTROLS, "mask", {0.0: 8, 3e-2: 7.75})
    return pd.DataFrame(rows)


def test_resnet_control_checks_read_the_controls_experiment():
    ledger = {r["check"]: r for r in ledger_rows("fig1_right", resnet_table())}
    tag = f"{claims.RESNET}/{claims.ALL_BLOCKS}"
    assert set(ledger) == {f"{tag}/{c}" for c in ("drop", "monotone", "broken", "broken_mask")}
    assert ledger[f"{tag}/drop"]["measured"] == pytest.approx(0.25) and ledger[f"{tag}/drop"]["passed"]
    offset, mask = ledger[f"{tag}/broken"], ledger[f"{tag}/broken_mask"]
    assert offset["measured"] == 0.0 and offset["passed"] and offset["kind"] == "control"
    assert mask["measured"] == pytest.approx(1 / 32) and not mask["passed"]
    assert offset["statement"].endswith(f"wd = 0 … 0.03 (from {claims.RESNET_CONTROLS})")
    # without the controls experiment the control checks are left out, whatever the main experiment holds
    ledger = {r["check"] for r in ledger_rows("fig1_right", resnet_table(controls=False))}
    assert ledger == {f"{tag}/drop", f"{tag}/monotone"}


def test_resnet_panel_draws_the_controls_experiments_curves(tmp_path, monkeypatch):
    mlp = [dict(r, layer=r["layer"].replace("layer1.0", "hidden1").replace("layer2.0", "hidden2"))
           for brk in ("none", "offset") for r in unit_rows(claims.MLP, brk, {0.0: 100, 1e-3: 90, 3e-2: 80})]
    figures = []
    save = fig1_right.save
    monkeypatch.setattr(fig1_right, "save", lambda fig, *a: figures.append(fig) or save(fig, *a))
    fig1_right.draw(pd.concat([pd.DataFrame(mlp), resnet_table()]), tmp_path)
    resnet_panel = figures[0].axes[4]
    curves = {line.get_label(): line.get_ydata().tolist() for line in resnet_panel.get_lines()}
    assert curves == {"all blocks, symmetric": [16, 16, 15, 14, 12],
                      "all blocks, broken: fixed offset θ + b": [16, 16],
                      "all blocks, broken: W-Asym pinned entries": [16, 15.5]}
