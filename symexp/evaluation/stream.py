"""What is measured on a stream of tasks (symexp.data.streams), the continual-learning experiments of
loss of plasticity: the online loss of the window, the error on the probe set or the loss and accuracy
on the test set as the last trained task sees it (random labels: the training accuracy on the set under
the labels just trained), and per hidden layer: dead units and feature effective rank on the probe set
(as loss-of-plasticity computes them), units silent on every input of the current task (slowly-changing
regression: the 32 inputs of its slow-bit pattern), LoP's per-example zero fraction of the window (counted
by the train step itself), each unit's norm over its norm at init, mean |W| per layer, and, apart from dead
units, the units on a mirror plane: the zero plane (the whole unit vector in, bias, out <= tau x the layer's
mean unit norm at init), the units that left it since the last evaluation, and duplicates (the
permutation plane).
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
    stream = batcher.stream
    px, py = stream.probe()
    pred, acts = member_forward(ens, state, px, per_member=stream.per_member_probe, hidden=True)
    if data.task == "regression":
        out.append(("", names.LOSS_PROBE, (pred - py).pow(2).mean(1)))
    if stream.probe_is_trained_task:  # the labels just trained: how well the task was memorised
        out.append(("", names.ACC_TRAIN, (pred.argmax(-1) == py).double().mean(1)))
    task_x = stream.task_inputs()
    if task_x is not None:  # units silent on everything the current task shows (LoP's dead units are on the probe)
        task_acts = member_forward(ens, state, task_x, per_member=True, hidden=True)[1]
        out += [(layer, names.SILENT_TASK, plasticity.dead_units(a)) for layer, a in zip(ens.model.probes, task_acts)]
    out += zero_fraction_results(state)
    return out + hidden_unit_results(ens, state, acts, mcfg)


def zero_fraction_results(state: State) -> list:
    """Per hidden layer whose model counts zeros in its train step (symexp.models.mlp count_zeros): the
    window's mean fraction of units exactly 0 on the training example; the counters restart."""
    out = []
    for key, counter in state.buffers.items():
        if key.startswith("zeros_") and bool((counter[:, 1] > 0).any()):
            out.append((key.removeprefix("zeros_"), names.ZERO_FRACTION, plasticity.zero_fraction(counter)))
            counter.zero_()  # in place: the train step holds this tensor
    return out


def hidden_unit_results(ens: Ensemble, state: State, acts: list[torch.Tensor], mcfg: dict) -> list:
    """Per hidden layer: dead units and effective rank of its probe features, mirror-plane counts; and
    mean |W| of every weight matrix."""
    theta = ens.effective(state.raw, ens.fixed)
    layers = list(ens.model.probes)
    views = ens.model.probe_views(theta) if hasattr(ens.model, "probe_views") else {}
    init_views = ens.model.probe_views(ens.effective(ens.raw0, ens.fixed)) if views else {}
    out = []
    prev_views = ens.model.probe_views(state.last_eval) if views and state.last_eval else {}
    for layer, act in zip(layers, acts):
        out += [(layer, names.DEAD_UNITS, plasticity.dead_units(act)),
                (layer, names.FEATURE_ERANK, plasticity.feature_effective_rank(act))]
        if layer in views:
            scale = torch.linalg.vector_norm(init_views[layer].double(), dim=-1).mean(1)  # [M]
            out += [(layer, names.zero_plane(tau), plasticity.zero_plane_count(views[layer], tau, scale))
                    for tau in ZERO_PLANE_TAUS]
            ratio = plasticity.unit_norm_ratio(views[layer], init_views[layer])
            out += [(layer, names.NORM_RATIO_MIN, ratio.amin(1)), (layer, names.NORM_RATIO_MEAN, ratio.mean(1))]
            if layer in prev_views:
                tau = ZERO_PLANE_TAUS[0]
                out.append((layer, names.left_zero_plane(tau),
                            plasticity.left_plane_count(prev_views[layer], views[layer], tau, scale)))
            out.append((layer, names.duplicates(mcfg["unit_tol"]),
                        plasticity.duplicate_count(views[layer], mcfg["unit_tol"], mcfg["dead_tau"])))
    out += [(k, names.WEIGHT_MAGNITUDE, plasticity.weight_magnitude(w, "mean"))
            for k, w in theta.items() if k.endswith("weight") and w.dim() >= 3]
    return out
