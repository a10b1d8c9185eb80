"""The neural-collapse protocol (issue 23): the step lr schedule, the squared loss to one-hot targets, and the
claims' measured terminal phase, premise and exposure on planted tables."""
import math

import pandas as pd
import pytest
import torch
from torch.func import vmap

from symexp import optim
from symexp.claims import UNDECIDED, evaluate
from symexp.claims import neural_collapse as ncc
from symexp.data import TensorData
from symexp.ensemble import Ensemble, member_table, one_hot_squared_error, task_loss
from symexp.metrics import names
from symexp.models.mlp import MLPConfig
from symexp.symmetry.breaking import Intact
from symexp.symmetry.plain import Plain


def test_step_schedule_divides_by_ten_at_a_third_and_two_thirds():
    factors = [optim.schedule_factor("step", t, 300) for t in (0, 99, 100, 199, 200, 299)]
    assert factors == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01])
    assert optim.mean_schedule_factor("step", 300) == pytest.approx(0.37)
    assert optim.mean_schedule_factor("cosine", 1000) == pytest.approx(0.5, abs=1e-3)


def test_squared_loss_to_one_hot_targets_is_exact_and_vmaps():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    y = torch.tensor([0, 2])
    # |(2,0,-1) - (1,0,0)|^2 = 1 + 0 + 1 = 2; |(0.5,0.5,0) - (0,0,1)|^2 = 0.25 + 0.25 + 1 = 1.5; mean 1.75
    assert one_hot_squared_error(logits, y).item() == pytest.approx(1.75)
    assert task_loss("classification", "mse") is one_hot_squared_error
    assert task_loss("classification") is torch.nn.functional.cross_entropy
    stacked = torch.stack([logits, 2 * logits])  # two members, as the engine calls it
    assert vmap(one_hot_squared_error, in_dims=(0, None))(stacked, y).tolist() == pytest.approx(
        [1.75, one_hot_squared_error(2 * logits, y).item()])


def test_model_loss_mse_reaches_the_engine():
    """`model.loss: mse` on the MLP is the loss the ensemble trains and evaluates (cross-entropy by default)."""
    data = TensorData(x=torch.randn(4, 1, 2, 2), y=torch.tensor([0, 1, 2, 1]), task="classification",
                      classes=("a", "b", "c"))
    members = member_table({"seeds": [0], "weight_decays": [0.0], "lrs": [0.1], "label_noises": [0.0]})

    def engine(cfg):
        return Ensemble(cfg.build(data), Plain(), Intact(), members, "classification", torch.device("cpu"),
                        torch.float32)
    ens = engine(MLPConfig(widths=[5], loss="mse"))
    assert ens.loss is one_hot_squared_error
    assert engine(MLPConfig(widths=[5])).loss is torch.nn.functional.cross_entropy
    logits = ens.outputs(ens.raw0, data.x)[0][0]  # member 0's [N, C]
    by_hand = ((logits - torch.eye(3)[data.y]) ** 2).sum(1).mean()
    assert ens.full_loss(ens.raw0, data.x, data.y).item() == pytest.approx(by_hand.item(), rel=1e-5)


def planted(acc: dict, nc1: dict, rank: dict, steps=(0, 100, 200, 300)) -> pd.DataFrame:
    """Rows of a plain neural_collapse job: per (wd, seed), training accuracy per step, NC1 (also as the ETF
    error and NC3) and rank."""
    rows = []
    for member, ((wd, seed), accs) in enumerate(acc.items()):
        base = dict(experiment=ncc.EXPERIMENT, job="none", member=member, seed=seed, breaking="none",
                    weight_decay=wd, lr=0.1)
        for step, a in zip(steps, accs):
            rows += [{**base, "step": step, "layer": "", "metric": names.ACC_TRAIN, "value": a},
                     *({**base, "step": step, "layer": "penultimate", "metric": m, "value": nc1[wd]}
                       for m in (names.NC1, names.ETF_ERROR, names.NC3)),
                     {**base, "step": step, "layer": "penultimate", "metric": ncc.RANK, "value": rank[wd]}]
    return pd.DataFrame(rows)


def test_terminal_phase_start_is_measured_from_the_training_accuracy():
    table = planted({(0.0, 0): [0.5, 1.0, 0.99, 1.0],   # leaves 100 % once: the phase starts at its return
                     (0.0, 1): [1.0, 1.0, 1.0, 1.0],    # at 100 % from the first evaluation
                     (0.01, 0): [0.5, 1.0, 1.0, 0.999],  # below 100 % at the end: no terminal phase
                     (0.01, 1): [0.5, 1.0, 1.0, 1.0]}, {0.0: 0.05, 0.01: 0.01}, {0.0: 30, 0.01: 12})
    start = ncc.terminal_phase_start(table).set_index(["weight_decay", "member"]).start
    assert start[0.0, 0] == 300 and start[0.0, 1] == 0 and math.isnan(start[0.01, 2]) and start[0.01, 3] == 100
    arms = ncc.arms(table)
    assert arms.start.tolist()[0] == 300 and math.isnan(arms.start.tolist()[1])
    # wd 0 starts at 300 of 300 (> T/2): no arm holds the phase for half of training, the premise is NaN
    assert math.isnan(ncc.collapsed_in_terminal_phase(table))
    # eta_eff * wd * T with the step schedule's mean lr: 0.1 / (1 - 0.9) * mean factor * 0.01 * 300
    mean = optim.mean_schedule_factor("step", 300)
    assert arms.exposure.tolist() == pytest.approx([0.0, 1.0 * mean * 0.01 * 300])


def test_rows_resting_on_a_failed_premise_read_undecided_and_pass_when_it_holds():
    nc1, rank = {0.0: 0.05, 1e-3: 0.02, 0.01: 0.01}, {0.0: 30, 1e-3: 20, 0.01: 12}
    late = {(wd, s): [0.5, 0.9, 0.9, 1.0] for wd in nc1 for s in (0, 1)}  # the phase starts at the end
    ledger = {(r["claim"], r["check"]): r for r in evaluate(ncc.CHECKS, planted(late, nc1, rank), "nc")}
    assert ledger["NC0", "terminal_phase"]["passed"] is False
    assert ledger["NC1", "decreasing_in_wd"]["passed"] == UNDECIDED
    assert "premise NC0/terminal_phase failed" in ledger["NC2", "rank_falls"]["statement"]
    early = {(wd, s): [0.5, 1.0, 1.0, 1.0] for wd in nc1 for s in (0, 1)}  # from step 100 of 300
    ledger = {(r["claim"], r["check"]): r for r in evaluate(ncc.CHECKS, planted(early, nc1, rank), "nc")}
    assert ledger["NC0", "terminal_phase"]["measured"] == pytest.approx(0.01)
    assert ledger["NC0", "terminal_phase"]["passed"] is True
    assert ledger["NC1", "decreasing_in_wd"]["passed"] is True and ledger["NC2", "rank_bound"]["passed"] is True
    assert "wd 0.01 (eta_eff·wd·T 1.11): terminal phase from step 100 of 300" in \
        ledger["NC0", "terminal_phase"]["statement"]
