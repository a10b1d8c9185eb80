"""The compiled train step (Ensemble.make_step(compile=True), one Inductor graph called without Dynamo)
computes what the eager step computes, freezes a diverging member the same way, and refuses inputs
of another shape instead of reading them with the traced one."""
from __future__ import annotations

import pytest
import torch

from symexp import optim
from symexp.components import load
from symexp.ensemble import Ensemble, member_table


def tiny_ensemble():
    data = load("data", "regression", n_train=64, dim=8, nonzero=2).build(torch.device("cpu"), torch.float64)
    members = member_table(dict(seeds=[0, 1], weight_decays=[0.0, 0.1], lrs=[0.05, 80.0], label_noises=[0.0]))
    ens = Ensemble(load("model", "linear", init_scale=0.5).build(data), load("symmetry", "rescaling"),
                   load("breaking", "offset", scale=0.3), members, "regression", torch.device("cpu"), torch.float64)
    return data, ens


def run(ens, data, rule, compile: bool, steps: int = 12):
    state = ens.init_state(rule)
    step = ens.make_step(rule, frozenset(ens.raw0), False, False, 1e8, compile)
    losses = []
    for _ in range(steps):
        state.raw, state.opt, state.alive, loss = step(state.raw, state.opt, state.alive, data.x, data.y,
                                                       ens.hyper["lr"])
        losses.append(loss)
    return state, torch.stack(losses), step


def test_compiled_step_equals_eager_and_freezes_diverged_members():
    data, ens = tiny_ensemble()
    rule = optim.Rule("sgd", momentum=0.5)
    eager, eager_loss, _ = run(ens, data, rule, False)
    compiled, compiled_loss, step = run(ens, data, rule, True)
    assert not eager.alive.all() and eager.alive.any()  # lr = 80 diverges, lr = 0.05 does not
    assert torch.equal(compiled.alive, eager.alive)
    for k in eager.raw:
        assert torch.allclose(compiled.raw[k], eager.raw[k], rtol=0, atol=1e-12), k
        assert torch.isfinite(compiled.raw[k]).all()  # frozen at the last finite parameters
    for k in eager.opt:
        assert torch.allclose(compiled.opt[k], eager.opt[k], rtol=0, atol=1e-12), k
    live = eager.alive
    assert torch.allclose(compiled_loss[:, live], eager_loss[:, live], rtol=1e-12, atol=0)

    state = ens.init_state(rule)
    with pytest.raises(AssertionError):  # Inductor checks the traced sizes on every call
        step(state.raw, state.opt, state.alive, data.x[:32], data.y[:32], ens.hyper["lr"])
