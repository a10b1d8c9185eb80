"""The char-level transformer: causal masking, shapes, the per-head products it hands to the rank
metrics, the double rotation symmetry, the text corpus and its config errors, and a tiny end-to-end
run of both transformer experiments through the batched engine, the figure and the claims."""
from __future__ import annotations

import hashlib
import math

import pandas as pd
import pytest
import torch

from symexp import metrics
from symexp.config import ConfigError, validate
from symexp.data import text
from symexp.models.transformer import Transformer
from symexp.plots import transformer as figure
from symexp.run import run_job

from conftest import LEDGER_KEYS, ledger_rows

V, T, L, H, D = 11, 8, 2, 4, 16


def tiny(seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    m = Transformer(V, T, L, H, D, init_scale=0.3).double()  # large init: attention far from uniform
    return m


def stacked(m: Transformer) -> dict[str, torch.Tensor]:
    return {k: v.detach()[None] for k, v in m.named_parameters()}


def test_shapes_and_probe_names():
    m = tiny()
    idx = torch.randint(V, (3, T))
    assert m(idx).shape == (3, T, V)
    assert m(idx[:, :5]).shape == (3, 5, V)  # shorter windows use the first positions
    views = m.probe_views(stacked(m))
    assert set(views) == set(m.probes)
    assert all(v.shape == (1, D, D) for v in views.values())


def test_causal_future_tokens_do_not_change_past_logits():
    m = tiny()
    idx = torch.randint(V, (2, T))
    changed = idx.clone()
    changed[:, 5:] = (idx[:, 5:] + 1) % V
    a, b = m(idx), m(changed)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-12)
    assert (a[:, 5:] - b[:, 5:]).abs().max() > 1e-3  # the change does reach the later positions


def test_per_head_products_match_direct_computation():
    m = tiny()
    theta = stacked(m)
    views = m.probe_views(theta)
    dh = D // H
    x = torch.randn(T, D, dtype=torch.float64)
    for layer, block in enumerate(m.blocks):
        att = block.attn
        wq, wk, wv, wo = att.q.weight, att.k.weight, att.v.weight, att.o.weight
        q, k = att.q(x), att.k(x)  # the module's own projections
        for h in range(H):
            rows = slice(h * dh, (h + 1) * dh)
            qk = views[f"L{layer}.h{h}.qk"][0]
            assert torch.allclose(qk, wq[rows].T @ wk[rows], atol=1e-12)
            # the head's attention scores (before 1/sqrt(d_head)) are the bilinear form x W_Q,h^T W_K,h x'
            assert torch.allclose(q[:, rows] @ k[:, rows].T, x @ qk @ x.T, atol=1e-10)
            assert torch.allclose(views[f"L{layer}.h{h}.ov"][0], wo[:, rows] @ wv[rows], atol=1e-12)
        assert torch.allclose(views[f"L{layer}.qk"][0], wq.T @ wk, atol=1e-12)
        assert torch.allclose(views[f"L{layer}.ov"][0], wo @ wv, atol=1e-12)
        assert torch.equal(views[f"L{layer}.q"][0], wq)


def test_double_rotation_leaves_function_and_products_invariant():
    m = tiny()
    idx = torch.randint(V, (2, T))
    before, views0 = m(idx), m.probe_views(stacked(m))
    dh = D // H
    with torch.no_grad():
        for block in m.blocks:
            att = block.attn
            for h in range(H):
                rows = slice(h * dh, (h + 1) * dh)
                r, _ = torch.linalg.qr(torch.randn(dh, dh, dtype=torch.float64))
                att.q.weight[rows] = r @ att.q.weight[rows]
                att.k.weight[rows] = r @ att.k.weight[rows]
                s, _ = torch.linalg.qr(torch.randn(dh, dh, dtype=torch.float64))
                att.v.weight[rows] = s @ att.v.weight[rows]
                att.o.weight[:, rows] = att.o.weight[:, rows] @ s.T
    assert torch.allclose(m(idx), before, atol=1e-10)
    views1 = m.probe_views(stacked(m))
    for name in views0:
        if name.endswith(("qk", "ov")):
            assert torch.allclose(views1[name], views0[name], atol=1e-10), name


def test_zero_and_vanishing_products_have_finite_rank_metrics():
    zero = torch.zeros(3, 8, 8)
    for fn in (metrics.tau_rank, metrics.erank, metrics.stable_rank, metrics.energy_rank):
        out = fn(zero)
        assert torch.isfinite(out).all() and out.tolist() == [0.0, 0.0, 0.0], fn.__name__
    # a product decay drove to ~1e-13: scale-blind measures see its noise spectrum, the floor sees zero
    tiny_noise = 1e-13 * torch.randn(2, 8, 8, dtype=torch.float64)
    assert metrics.tau_rank(tiny_noise).tolist() == [8.0, 8.0]
    for fn in (metrics.tau_rank, metrics.erank, metrics.stable_rank, metrics.energy_rank):
        assert fn(tiny_noise, atol=1e-4).tolist() == [0.0, 0.0], fn.__name__
    # the floor drops only the directions below it
    w = torch.diag(torch.tensor([2.0, 1.0, 1e-6, 0.0], dtype=torch.float64))[None]
    assert metrics.tau_rank(w, tau=1e-9).item() == 3 and metrics.tau_rank(w, tau=1e-9, atol=1e-4).item() == 2
    p = torch.tensor([2 / 3, 1 / 3], dtype=torch.float64)
    assert metrics.erank(w, atol=1e-4).item() == pytest.approx(math.exp(-(p * p.log()).sum().item()))


def _cfg(**kw) -> dict:
    return dict(name="text", path=None, context=16, val_fraction=0.1, eval_windows=4, seed=0) | kw


def test_builtin_corpus_loads_as_shifted_windows():
    corpus = text.load_corpus(None)
    assert len(corpus) > 100_000  # Python's help text: ~465k characters under 3.11
    data = text.text(_cfg(), torch.device("cpu"), torch.float32)
    vocab = data.vocab
    digest = hashlib.sha256(corpus.encode()).hexdigest()[:16]
    assert data.task == "language" and data.source == f"{text.BUILTIN} ({len(corpus)} chars, sha256 {digest})"
    assert isinstance(vocab, tuple) and len(vocab) > 60
    n_train = len(corpus) - int(len(corpus) * 0.1)
    assert data.x.shape == (n_train - 16, 16)
    assert torch.equal(data.x[:, 1:], data.y[:, :-1])  # y is x shifted by one character
    assert torch.equal(data.x[1, :-1], data.x[0, 1:])  # every offset is a window
    assert data.x_eval.shape == data.x_test.shape == (4, 16)
    decoded = "".join(vocab[i] for i in data.x[0].tolist())
    assert decoded == corpus[:16]


def test_user_text_file(tmp_path):
    f = tmp_path / "input.txt"
    f.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 20, encoding="utf-8")
    data = text.text(_cfg(path=str(f), context=8), torch.device("cpu"), torch.float32)
    assert data.source.startswith(f"{f} ({len(f.read_text())} chars, sha256 ")
    assert "".join(data.vocab) == "".join(sorted(set(f.read_text())))
    short = tmp_path / "short.txt"
    short.write_text("too short")
    with pytest.raises(ConfigError, match="data.path"):
        text.text(_cfg(path=str(short)), torch.device("cpu"), torch.float32)


@pytest.mark.parametrize("overrides,key", [
    (["data.path=/no/such/corpus.txt"], "data.path"),
    (["model.n_head=5"], "model.n_head"),
    (["data.val_fraction=1.5"], "data.val_fraction"),
    (["model=linear"], "model.name"),
    (["+optim.momentum=0.9"], "optim.momentum"),
    (["optim.betas=[0.9,1.0]"], "optim.betas"),
    (["optim.name=lion"], "optim.name"),
])
def test_bad_text_config_fails_in_one_line(make_cfg, overrides, key):
    with pytest.raises(ConfigError) as e:
        validate(make_cfg("experiment=transformer", *overrides))
    msg = str(e.value)
    assert key in msg.split(":")[0] and "\n" not in msg


TINY = ["data.context=8", "data.eval_windows=4", "model.d_model=16", "model.n_head=2", "model.n_layer=1",
        "optim.batch_size=4", "train.steps=6", "train.eval_every=3", "dtype=float64"]


def test_tiny_runs_figure_and_claims(make_cfg, tmp_path):
    frames = []
    for exp in ("transformer", "transformer_adamw"):
        status = run_job(make_cfg(f"experiment={exp}", *TINY, "ensemble.weight_decays=[0.0,0.01,1.0]"),
                         tmp_path / exp, progress=False)
        assert status["state"] == "done"
        frames.append(pd.read_parquet(tmp_path / exp / "metrics.parquet"))
    table = pd.concat(frames, ignore_index=True)
    assert table.value.notna().all()
    assert {"L0.qk", "L0.ov", "L0.q", "L0.k", "L0.h1.qk", "L0.h1.ov"} <= set(table.layer)
    assert {"loss/test", "loss/train", "rank/erank", "rank/tau@0.001", "rank/stable"} <= set(table.metric)
    rows = ledger_rows("transformer", table)
    assert [r["check"] for r in rows][:6] == ["coupled_tau_rank", "coupled_head_tau_rank", "coupled_erank",
                                              "coupled_tau_rank_nofloor", "coupled_erank_nofloor", "coupled_collapse"]
    assert "rank/tau@0.001,atol@0.0001" in rows[0]["statement"] and "without the floor" in rows[3]["statement"]
    assert all(set(r) >= LEDGER_KEYS for r in rows)
    assert all(pd.notna(r["measured"]) for r in rows)
    assert all(p.exists() for p in figure.draw(table, tmp_path / "figures"))


def test_batched_adam_members_equal_separate_runs(make_cfg, tmp_path):
    """Per-member lr and wd through Adam's buffers and step counts: member m of a batched run is a
    standalone run of m."""
    grid = ["ensemble.seeds=[0,1]", "ensemble.lrs=[0.003,0.01]"]
    run_job(make_cfg("experiment=transformer", *TINY, *grid, "ensemble.weight_decays=[0.0,0.05]"),
            tmp_path / "batched", progress=False)
    batched = torch.load(tmp_path / "batched" / "weights.pt")
    one = ["ensemble.seeds=[1]", "ensemble.weight_decays=[0.05]", "ensemble.lrs=[0.01]"]
    run_job(make_cfg("experiment=transformer", *TINY, *one), tmp_path / "single", progress=False)
    single = torch.load(tmp_path / "single" / "weights.pt")
    m = 7  # (seed 1, wd 0.05, lr 0.01): the last member of the product
    for k, v in single.items():
        assert (v[0] - batched[k][m]).abs().max() < 1e-12, k
