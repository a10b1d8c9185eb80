"""The evaluation's cheaper passes give the numbers of the plain ones: full_loss in one vmapped call
(small regressions) or in chunks equals each member's loss computed on its own, and a classifier's
test loss taken from the one pass that also gives its accuracy and features equals full_loss over
the test set, up to the rounding of another summation order."""
from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from symexp import ensemble, optim
from symexp.components import load
from symexp.data import TensorData
from symexp.ensemble import Ensemble, member_table
from symexp.metrics import homogeneity, names
from symexp.models.mlp import MLP
from symexp.evaluation.data_set import data_set_results

TOL = {torch.float32: 1e-6, torch.float64: 1e-12}
MEMBERS = member_table(dict(seeds=[0, 1], weight_decays=[0.0, 0.1], lrs=[0.05], label_noises=[0.0]))


def per_member(ens: Ensemble, fn) -> torch.Tensor:
    """fn(raw, fixed, buffers) of each member on its own, without vmap."""
    pick = lambda d, m: {k: v[m] for k, v in d.items()}  # noqa: E731
    state = ens.init_state(optim.Rule("sgd"))
    with torch.no_grad(), ensemble.evaluating(ens.model):
        return torch.stack([fn(pick(state.raw, m), pick(ens.fixed, m), pick(state.buffers, m))
                            for m in range(ens.size)])


def counting_calls(ens: Ensemble, monkeypatch) -> list:
    calls, real = [], ens.member_loss
    monkeypatch.setattr(ens, "member_loss", lambda *a: calls.append(1) or real(*a))
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_full_loss_in_one_call_or_in_chunks_equals_each_members_own_loss(dtype, monkeypatch):
    data = load("data", "regression", n_train=600, dim=8, nonzero=2).build(torch.device("cpu"), dtype)
    ens = Ensemble(load("model", "linear", init_scale=0.5).build(data), load("symmetry", "rescaling"),
                   load("breaking", "offset", scale=0.3), MEMBERS, "regression", torch.device("cpu"), dtype)
    state = ens.init_state(optim.Rule("sgd"))
    own = per_member(ens, lambda raw, fixed, _: ens.member_loss(raw, fixed, data.x, data.y))
    calls = counting_calls(ens, monkeypatch)
    whole = ens.full_loss(state.raw, data.x, data.y)
    assert len(calls) == 1  # 4 x 600 x 8 elements: one vmapped call
    monkeypatch.setattr(ensemble, "EVAL_ELEMENTS", 0)
    chunked = ens.full_loss(state.raw, data.x, data.y)
    assert len(calls) == 1 + 3  # 600 rows in chunks of 256
    for got in (whole, chunked):
        assert got.dtype == dtype
        torch.testing.assert_close(got, own, rtol=TOL[dtype], atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_test_loss_from_the_feature_pass_equals_full_loss(dtype, monkeypatch):
    gen = torch.Generator().manual_seed(0)
    images = lambda n: torch.randn(n, 1, 5, 5, generator=gen, dtype=dtype)  # noqa: E731
    labels = lambda n: torch.randint(0, 3, (n,), generator=gen)  # noqa: E731
    data = TensorData(x=images(300), y=labels(300), task="classification", x_test=images(600), y_test=labels(600),
                      classes=("a", "b", "c"))
    ens = Ensemble(MLP(25, [7, 6], 3, "relu"), load("symmetry", "plain"), load("breaking", "offset", scale=0.3),
                   MEMBERS, "classification", torch.device("cpu"), dtype)
    state = ens.init_state(optim.Rule("sgd"))
    mcfg = {"train_subset": 0, "near_corr": 0.99, "corr_matrix": False}
    calls = counting_calls(ens, monkeypatch)
    got = {metric: v for _, metric, v in data_set_results(ens, state, data, mcfg, final=False)}
    assert len(calls) == 2  # loss/train only (300 rows: 2 chunks); the test set is passed over once
    reference = ens.full_loss(state.raw, data.x_test, data.y_test)  # the former second pass
    torch.testing.assert_close(got[names.LOSS_TEST], reference, rtol=TOL[dtype], atol=0)
    logits = per_member(ens, lambda raw, fixed, _: functional_call(ens.model, ens.effective(raw, fixed),
                                                                   (data.x_test,)))
    torch.testing.assert_close(got[names.ACC_TEST], (logits.argmax(-1) == data.y_test).double().mean(1), rtol=0, atol=0)
    assert [m for _, m, _ in data_set_results(ens, state, data, mcfg, final=False)][:4] == [
        names.LOSS_TRAIN, names.LOSS_TEST, names.ALIVE, names.ACC_TEST]  # the rows' order is kept


def exact_independent_units(V: torch.Tensor, tol: float) -> torch.Tensor:
    """independent_units with every distance from the pairwise differences (the former path)."""
    real = homogeneity.AMBIGUOUS
    homogeneity.AMBIGUOUS = float("inf")
    try:
        return homogeneity.independent_units(V, tol)
    finally:
        homogeneity.AMBIGUOUS = real


def test_independent_units_by_gram_matrix_equals_the_exact_distances(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    V = torch.randn(5, 40, 30, generator=gen, dtype=torch.float64)
    for i in range(0, 40, 4):  # near-duplicates on both sides of tol = 0.1: rel ~ 2 s^2 p / (2 p) = s^2
        for j, s in ((1, 0.25), (2, 0.35), (3, 0.0)):
            V[:, i + j] = V[:, i] + s * torch.randn(5, 30, generator=gen, dtype=torch.float64)
    cdist_calls, real_cdist = [], torch.cdist
    monkeypatch.setattr(homogeneity.torch, "cdist", lambda *a, **k: cdist_calls.append(1) or real_cdist(*a, **k))
    exact = exact_independent_units(V, 0.1)
    assert len(cdist_calls) == 1 and 10 < exact.min() and exact.max() < 40  # some pairs grouped, some not
    torch.testing.assert_close(homogeneity.independent_units(V, 0.1), exact, rtol=0, atol=0)
    assert len(cdist_calls) == 1  # no pair within AMBIGUOUS of tol: the Gram matrix decided
    # a pair 1e-12 from the tolerance: the Gram matrix's round-off could decide it, the exact path does
    a, b = V[0, 0], V[0, 1]
    rel = 2 * (a - b).square().sum() / (a.square().sum() + b.square().sum())
    for tol in (rel.item() * (1 - 1e-12), rel.item() * (1 + 1e-12)):
        pair = V[:1, :2]
        torch.testing.assert_close(homogeneity.independent_units(pair, tol), exact_independent_units(pair, tol))
    assert len(cdist_calls) == 1 + 2 * 2
    assert [homogeneity.independent_units(V[:1, :2], rel.item() * f).item() for f in (1 - 1e-9, 1 + 1e-9)] == [2, 1]
