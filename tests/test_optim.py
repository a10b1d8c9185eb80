"""The batched Adam / AdamW updates equal torch.optim.Adam / AdamW member by member, with per-member lr
and wd: coupled L2 is Adam's weight_decay, decoupled decay is AdamW's."""
from __future__ import annotations

import pytest
import torch

from symexp import optim
from symexp.components import load

LRS, WDS = [1e-3, 3e-3, 1e-2], [0.0, 0.1, 0.5]
SHAPES = {"w": (4, 3), "b": (5,)}


def _stacked(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(len(LRS), *s, generator=g, dtype=torch.float64) for k, s in SHAPES.items()}


def _grads(params: dict[str, torch.Tensor], step: int) -> dict[str, torch.Tensor]:
    """A deterministic, parameter-dependent gradient (so a wrong decay changes later gradients)."""
    return {k: torch.sin(3.0 * v + step) + 0.1 * v ** 3 for k, v in params.items()}


@pytest.mark.parametrize("name,torch_cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_batched_update_equals_torch_optim_per_member(name, torch_cls):
    rule = optim.Rule(name=name, betas=(0.8, 0.95), eps=1e-6)
    params = _stacked()
    decayed = frozenset({"w"})  # "b" is exempt, like reg.exclude
    state = rule.init(params)
    lr, wd = torch.tensor(LRS, dtype=torch.float64), torch.tensor(WDS, dtype=torch.float64)
    refs = []
    for m in range(len(LRS)):
        ps = {k: v[m].clone().requires_grad_(True) for k, v in params.items()}
        opt = torch_cls([{"params": [ps["w"]], "weight_decay": WDS[m]}, {"params": [ps["b"]], "weight_decay": 0.0}],
                        lr=LRS[m], betas=(0.8, 0.95), eps=1e-6)
        refs.append((ps, opt))
    for step in range(6):
        params, state = rule.update(params, _grads(params, step), state, lr, wd, decayed)
        for ps, opt in refs:
            with torch.no_grad():
                for k, g in _grads({k: v.detach() for k, v in ps.items()}, step).items():
                    ps[k].grad = g
            opt.step()
    for m, (ps, _) in enumerate(refs):
        for k in SHAPES:
            assert torch.allclose(params[k][m], ps[k].detach(), rtol=0, atol=1e-12), (name, m, k)
    assert state["step"].tolist() == [6.0] * len(LRS)


def test_coupled_and_decoupled_differ_and_wd_zero_agrees():
    params, lr = _stacked(), torch.tensor(LRS, dtype=torch.float64)
    wd = torch.tensor(WDS, dtype=torch.float64)
    out = {}
    for name in ("adam", "adamw"):
        rule = optim.Rule(name=name)
        p, s = params, rule.init(params)
        for step in range(3):
            p, s = rule.update(p, _grads(p, step), s, lr, wd, frozenset(SHAPES))
        out[name] = p["w"]
    assert torch.equal(out["adam"][0], out["adamw"][0])  # member 0 has wd = 0: the same update
    assert (out["adam"][2] - out["adamw"][2]).abs().max() > 1e-4


def test_rule_from_config_and_bad_name():
    r = load("optim", "adamw", betas=[0.9, 0.95], eps=1e-8, batch_size=16).rule()
    assert r == optim.Rule(name="adamw", betas=(0.9, 0.95), eps=1e-8)
    assert load("optim", "sgd", momentum=0.5).rule().momentum == 0.5
    with pytest.raises(ValueError, match="optim.name"):
        load("optim", "sgd", name="lion")
