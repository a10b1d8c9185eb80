"""What is measured on a stream of tasks (symexp.data.streams), the continual-learning experiments of
loss of plasticity: the online loss of the window, the error on the probe set or the loss and accuracy
on the test set as the last trained task sees it, and per hidden layer: dead units and feature
effective rank on the probe set (as loss-of-plasticity computes them), mean |W| per layer, and, apart
from dead units, the units on a mirror plane: the zero plane (the whole unit vector in, bias, out
<= tau x the layer's mean unit norm at init) and duplicates (the permutation plane).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from symexp.data.streams import StreamData
from symexp.ensemble import Ensemble, State, evaluating
from symexp.metrics import names, plasticity

ZERO_PLANE_TAUS = (1e-3, 0.1)  # on the plane (numerically) | near it (a tenth of the init's unit norm)


def member_forward(ens: Ensemble, state: State, x: torch.Tensor, per_member: bool, **kwargs):
    """Eval-mode outputs of every member on x ([N, ...] shared, or [M, N, ...] with per_member)."""
    def one(raw, fixed, buffers, x):
        return functional_call(ens.model, {**ens.effective(raw, fixed), **buffers}, (x,), kwargs)
    fn = vmap(one, in_dims=(0, 0, 0, 0 if per_member else None))
    with torch.no_grad(), evaluating(ens.model):
        return fn(state.raw, ens.fixed, state.buffers, x)


def stream_results(ens: Ensemble, state: State, data: StreamData, batcher, mcfg: dict) -> list:
    """The online loss of the window, the test or probe error, and the hidden units on the probe set."""
    out = []
    online = batcher.take_online()
    if online is not None:
        out.append(("", names.LOSS_ONLINE, online))
    test = batcher.stream.test()
    if test is not None:  # the test set under the permutation of the task just trained
        logits = member_forward(ens, state, test[0], per_member=True)
        y = test[1].expand(logits.shape[0], -1)
        out.append(("", names.LOSS_TEST, F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
                    .view(y.shape).mean(1)))
        out.append(("", names.ACC_TEST, (logits.argmax(-1) == y).double().mean(1)))
    px, py = batcher.stream.probe()
    pred, acts = member_forward(ens, state, px, per_member=batcher.stream.per_member_probe, hidden=True)
    if data.task == "regression":
        out.append(("", names.LOSS_PROBE, (pred - py).pow(2).mean(1)))
    return out + hidden_unit_results(ens, state, acts, mcfg)


def hidden_unit_results(ens: Ensemble, state: State, acts: list[torch.Tensor], mcfg: dict) -> list:
    """Per hidden layer: dead units and effective rank of its probe features, mirror-plane counts; and
    mean |W| of every weight matrix."""
    theta = ens.effective(state.raw, ens.fixed)
    layers = list(ens.model.probes)
    views = ens.model.probe_views(theta) if hasattr(ens.model, "probe_views") else {}
    init_views = ens.model.probe_views(ens.effective(ens.raw0, ens.fixed)) if views else {}
    out = []
    for layer, act in zip(layers, acts):
        out += [(layer, names.DEAD_UNITS, plasticity.dead_units(act)),
                (layer, names.FEATURE_ERANK, plasticity.feature_effective_rank(act))]
        if layer in views:
            scale = torch.linalg.vector_norm(init_views[layer].double(), dim=-1).mean(1)  # [M]
            out += [(layer, names.zero_plane(tau), plasticity.zero_plane_count(views[layer], tau, scale))
                    for tau in ZERO_PLANE_TAUS]
            out.append((layer, names.duplicates(mcfg["unit_tol"]),
                        plasticity.duplicate_count(views[layer], mcfg["unit_tol"], mcfg["dead_tau"])))
    out += [(k, names.WEIGHT_MAGNITUDE, plasticity.weight_magnitude(w, "mean"))
            for k, w in theta.items() if k.endswith("weight") and w.dim() >= 3]
    return out
