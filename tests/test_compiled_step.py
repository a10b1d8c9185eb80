"""The train step as one traced ATen graph (Ensemble.make_step's default) and as that graph compiled by
Inductor (compile=True, called without Dynamo) computes what the vmapped step computes op by op,
freezes a diverging member the same way, and traces a batch of another shape anew instead of reading
it with the graph of the first."""
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


def run(ens, x, y, rule, steps: int = 12, step=None, **mode):
    state = ens.init_state(rule)
    step = step or ens.make_step(rule, frozenset(ens.raw0), False, False, 1e8, **mode)
    losses = []
    for _ in range(steps):
        state.raw, state.opt, state.alive, loss = step(state.raw, state.opt, state.alive, x, y, ens.hyper["lr"])
        losses.append(loss)
    return state, torch.stack(losses), step


def assert_same(state, losses, ref, ref_losses, atol: float):
    assert torch.equal(state.alive, ref.alive)
    for k in ref.raw:
        assert torch.allclose(state.raw[k], ref.raw[k], rtol=0, atol=atol), k
        assert torch.isfinite(state.raw[k]).all()  # frozen at the last finite parameters
    for k in ref.opt:
        assert torch.allclose(state.opt[k], ref.opt[k], rtol=0, atol=atol), k
    live = ref.alive
    assert torch.allclose(losses[:, live], ref_losses[:, live], rtol=atol, atol=0)


MODES = {"graph": dict(compile=False), "inductor": dict(compile=True),
         "inductor_cpp_wrapper": dict(compile=True, cpp_wrapper=True)}


@pytest.mark.parametrize("mode", MODES.values(), ids=MODES.keys())
def test_graph_step_equals_the_vmapped_step_and_freezes_diverged_members(mode):
    data, ens = tiny_ensemble()
    rule = optim.Rule("sgd", momentum=0.5)
    eager, eager_loss, _ = run(ens, data.x, data.y, rule, compile=False, trace=False)
    state, losses, step = run(ens, data.x, data.y, rule, **mode)
    compile = mode["compile"]
    assert not eager.alive.all() and eager.alive.any()  # lr = 80 diverges, lr = 0.05 does not
    # the traced graph runs the vmapped step's own ops: the same numbers bit for bit; Inductor fuses them
    assert_same(state, losses, eager, eager_loss, atol=1e-12 if compile else 0.0)

    # a batch of another shape gets its own graph, not the first one's sizes
    half = run(ens, data.x[:32], data.y[:32], rule, compile=False, trace=False)[:2]
    assert_same(*run(ens, data.x[:32], data.y[:32], rule, step=step)[:2], *half, atol=1e-12 if compile else 0.0)
    assert len(step.graphs) == 2


def test_cpp_wrapper_changes_no_number():
    """The C++ wrapper calls the kernels Inductor would call from Python: the same numbers bit for bit."""
    data, ens = tiny_ensemble()
    rule = optim.Rule("sgd", momentum=0.5)
    python = run(ens, data.x, data.y, rule, compile=True)
    cpp = run(ens, data.x, data.y, rule, compile=True, cpp_wrapper=True)
    assert_same(*cpp[:2], *python[:2], atol=0.0)
