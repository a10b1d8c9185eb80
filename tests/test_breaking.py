"""Symmetry-removal controls: syre (a fixed random centre at the published scale) and L2-Init
(the centre at the init), both the offset construction theta = compose(raw + b)."""
from __future__ import annotations

import math

import torch

from symexp import optim
from symexp.components import load
from symexp.ensemble import Ensemble, member_table
from symexp.models.linear import Linear
from symexp.symmetry.rescaling import Rescaling

MEMBERS = member_table(dict(seeds=[0, 1], weight_decays=[0.5], lrs=[0.1], label_noises=[0.0]))


def _ensemble(breaking: str, **kw) -> Ensemble:
    return Ensemble(Linear(50, 0.1), Rescaling(), load("breaking", breaking, **kw), MEMBERS, "regression",
                    torch.device("cpu"), torch.float64)


def test_syre_offsets_have_the_published_scale_and_move_the_mirror_off_the_origin():
    ens = _ensemble("syre")
    b = ens.fixed["weight.u"]
    assert abs(float(b.std()) / (0.01 / math.sqrt(50)) - 1) < 0.15  # sigma_0 = 0.01 / sqrt(d), d = 50
    zero = {k: torch.zeros_like(v) for k, v in ens.raw0.items()}
    # the symmetric point of u * v (u = v = 0) is no longer where decay pulls the trained tensors
    assert ens.effective(zero, ens.fixed)["weight"].abs().min() > 0
    assert torch.equal(_ensemble("syre", sigma0=0.5).fixed["weight.u"] / 0.5, _ensemble("syre", sigma0=1.0).fixed["weight.u"])


def test_l2_init_starts_at_the_init_and_decay_pulls_back_to_it():
    plain, l2 = _ensemble("none"), _ensemble("l2_init")
    start = l2.effective(l2.raw0, l2.fixed)["weight"]
    assert torch.equal(start, plain.effective(plain.raw0, plain.fixed)["weight"])  # theta_0 = the init
    assert all(float(v.abs().max()) == 0 for v in l2.raw0.values())
    # decay alone (zero data gradient) leaves theta at the init; plain decay shrinks it towards 0
    rule, zero_grads = optim.Rule(), {k: torch.zeros_like(v) for k, v in l2.raw0.items()}
    lr, wd = torch.full((2,), 0.1, dtype=torch.float64), torch.full((2,), 0.5, dtype=torch.float64)
    moved, _ = rule.update(l2.raw0, zero_grads, {}, lr, wd, frozenset(l2.raw0))
    assert torch.equal(l2.effective(moved, l2.fixed)["weight"], start)
    shrunk, _ = rule.update(plain.raw0, zero_grads, {}, lr, wd, frozenset(plain.raw0))
    assert plain.effective(shrunk, plain.fixed)["weight"].abs().sum() < start.abs().sum()


def test_syre_diagonal_decays_each_entry_by_its_own_weight():
    ens = _ensemble("syre", diagonal=True)
    d = ens.fixed["weight.u" + ":decay"]
    assert d.shape == ens.raw0["weight.u"].shape and float(d.min()) >= 0.5 and float(d.max()) <= 1.5
    assert torch.equal(ens.fixed["weight.u"], _ensemble("syre").fixed["weight.u"])  # same theta_0 as plain syre
    # with a zero data gradient, one SGD step is raw <- raw - lr * wd * D * raw
    step = ens.make_step(optim.Rule(), frozenset(ens.raw0), False, False, 1e8, False)
    x, y = torch.zeros(4, 50, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    raw, _, _, _ = step(ens.raw0, {}, torch.ones(2, dtype=torch.bool), x, y, torch.full((2,), 0.1, dtype=torch.float64))
    want = ens.raw0["weight.u"] * (1 - 0.1 * 0.5 * d)
    zero_grad_v = ens.raw0["weight.v"] * (1 - 0.1 * 0.5 * ens.fixed["weight.v:decay"])
    assert torch.allclose(raw["weight.u"], want) and torch.allclose(raw["weight.v"], zero_grad_v)


def test_offset_and_mask_controls_trace_to_one_graph():
    """Offset and mask write one form (theta = where(P, c, raw + b)), so with compile the second control
    job of a model loads the first one's kernels; offset still computes raw + b exactly."""
    from symexp.models.mlp import MLP
    from symexp.symmetry.plain import Plain

    def graph_code(name: str) -> str:
        ens = Ensemble(MLP(6, [5], 1, "relu", scalar_output=True), Plain(), load("breaking", name), MEMBERS, "regression", torch.device("cpu"),
                       torch.float64)
        rule, state = optim.Rule(), ens.init_state(optim.Rule())
        step = ens.make_step(rule, frozenset(ens.raw0), False, False, 1e8, False)
        x, y = torch.randn(8, 6, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
        step(state.raw, state.opt, state.alive, x, y, ens.hyper["lr"])
        return next(iter(step.graphs.values())).code, ens

    offset_code, offset = graph_code("offset")
    mask_code, _ = graph_code("mask")
    assert offset_code == mask_code
    b = {k: offset.fixed[k] for k in offset.raw0}
    assert all(not offset.fixed[k + ":pinned"].any() for k in offset.raw0)
    shifted = offset.effective(offset.raw0, offset.fixed)
    assert all(torch.equal(shifted[k.rsplit(".", 1)[0]], offset.raw0[k] + b[k]) for k in offset.raw0)
