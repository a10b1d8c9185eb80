"""Every finding checked on the model itself: a random element of the reported group is applied to a copy
(a random permutation of the channels, positive rescaling, sign flip, rotation, per-head double rotation,
per-block rotary rotation and rescaling, per-channel scale, logit shift) and the outputs compared, in train
mode and in eval mode. A finding whose claimed modes change the output is a bug of the audit, not a fact
about the model; a mode the finding does not claim is measured and reported too (a scale before BatchNorm
holds in train mode only: in eval mode the running statistics, buffers, do not move with the weights).

The copy runs in float64 when it is small enough (the tolerance is then 1e-9; 1e-3 for float32 copies or
outputs the model casts to float32).
Dropout is switched off in the train-mode comparison (its mask is random, not a function of the weights), and
every pass draws from the same seeded random stream, so dropout that is not a module (SDPA's dropout_p, a
functional dropout on the attention weights) draws the same mask before and after the group element;
a scale symmetry is checked with the norm's eps at 0 (the eps breaks it by O(eps / variance)).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from symexp.audit import rotary
from symexp.audit.graph import Finding
from symexp.audit.trace import split_inputs, tensors_in

DOUBLE_MAX = 20_000_000  # parameters up to which the copy is verified in float64
# by the outputs' dtype (a model may cast them); else 1e-2. float32: ResNet50's findings (a float32 copy,
# train-mode BatchNorm on 2 images) changed its outputs by up to 9.6e-5 through round-off alone
TOL = {torch.float64: 1e-9, torch.float32: 1e-3}


def verify(model: nn.Module, example_inputs, findings: list[Finding], transposed: set[str],
           seed: int = 0) -> list[dict]:
    """Per finding: {"train": change, "eval": change, "claims": modes, "tol": tolerance} (relative changes)."""
    dtype = torch.float64 if sum(p.numel() for p in model.parameters()) <= DOUBLE_MAX else torch.float32
    m = copy.deepcopy(model).to(dtype)
    inputs = _cast(example_inputs, dtype)
    params = dict(m.named_parameters())
    gen = torch.Generator().manual_seed(seed)
    base = {mode: _outputs(m, inputs, mode) for mode in ("train", "eval")}  # the model's own outputs, once
    tol = max((TOL.get(o.dtype, 1e-2) for o in base["eval"]), default=TOL[dtype])
    results = []
    for f in findings:
        claims = ("train",) if f.symmetry == "scale" and f.spec.get("per_channel") else ("train", "eval")
        saved = _state(m, f)
        eps = _exact_norms(m) if f.symmetry == "scale" else {}
        change = {}
        for mode in ("train", "eval"):
            before = _outputs(m, inputs, mode) if eps else base[mode]
            with torch.no_grad():
                ACT[f.symmetry](m, params, f, transposed, gen, dtype)
            after = _outputs(m, inputs, mode)
            _restore(m, saved)
            if f.symmetry == "translation" and not f.spec.get("explicit"):  # a symmetry of the softmax loss
                before, after = ([F.log_softmax(o, dim=-1) for o in outs] for outs in (before, after))
            change[mode] = max((_rel(a, b) for a, b in zip(after, before)), default=0.0)
        for norm, e in eps.items():
            norm.eps = e
        results.append({"train": change["train"], "eval": change["eval"], "claims": claims, "tol": tol})
    return results


def _exact_norms(m: nn.Module) -> dict:
    """eps ~ 0 in every norm layer (restored after): a scale before a norm is exact only without the eps
    added to the variance, which breaks it by O(eps / variance)."""
    norms = {k: k.eps for k in m.modules() if isinstance(k, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm))}
    for k in norms:
        k.eps = 1e-30  # batch_norm refuses 0 in train mode
    return norms


def _cast(x, dtype):
    if torch.is_tensor(x):
        return x.to(dtype) if x.is_floating_point() else x
    if isinstance(x, (tuple, list)):
        return type(x)(_cast(i, dtype) for i in x)
    if isinstance(x, dict):
        return {k: _cast(v, dtype) for k, v in x.items()}
    return x


def _state(m: nn.Module, f: Finding) -> dict:
    """Everything a transform or a train-mode forward may change: the finding's parameters and all buffers."""
    params = dict(m.named_parameters())
    keep = {n: params[n].detach().clone() for n in f.params if n in params}
    keep.update({f"buffer:{n}": b.detach().clone() for n, b in m.named_buffers()})
    return keep


def _restore(m: nn.Module, saved: dict) -> None:
    params, buffers = dict(m.named_parameters()), dict(m.named_buffers())
    with torch.no_grad():
        for n, t in saved.items():
            (buffers[n[7:]] if n.startswith("buffer:") else params[n]).copy_(t)


def _outputs(m: nn.Module, inputs, mode: str) -> list[torch.Tensor]:
    training = {k: k.training for k in m.modules()}
    m.train(mode == "train")
    for k in m.modules():
        if isinstance(k, nn.modules.dropout._DropoutNd):
            k.eval()
    saved = {n: b.detach().clone() for n, b in m.named_buffers()}  # a train-mode pass updates BN statistics
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            args, kwargs = split_inputs(inputs)
            out = [o for o in tensors_in(m(*args, **kwargs)) if o.is_floating_point()]
    finally:
        for k, t in training.items():
            k.train(t)
        with torch.no_grad():
            for n, b in m.named_buffers():
                b.copy_(saved[n])
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(torch.finfo(b.dtype).tiny))


def _view(params, name: str, transposed: set[str]) -> torch.Tensor:
    """The parameter in the [out, in] layout findings use (a view: writing to it writes the parameter)."""
    p = params[name]
    return p.t() if name in transposed else p


def _on_axis(t: torch.Tensor, axis: int, h: int, fn) -> None:
    """t's slices along `axis` (h channels, each maybe a block of entries) replaced by fn([h, rest])."""
    moved = t.movedim(axis, 0)
    new = fn(moved.reshape(h, -1)).reshape(moved.shape)
    moved.copy_(new)


def _bias_of(params, weight: str) -> str | None:
    name = weight[: -len("weight")] + "bias" if weight.endswith("weight") else None
    return name if name in params else None


def _orthogonal(n: int, gen, dtype) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def _permutation(m, params, f: Finding, transposed, gen, dtype) -> None:
    h = f.spec["h"]
    perm = torch.randperm(h, generator=gen)
    for name, axis in f.spec["parts"]:
        _on_axis(_view(params, name, transposed), axis, h, lambda x: x[perm])
    for name in f.spec.get("batch_norms", []):  # their running statistics are buffers on the same channels
        bn = m.get_submodule(name.rsplit(".", 1)[0]) if "." in name else m
        for stat in (bn.running_mean, bn.running_var):
            if stat is not None:
                stat.copy_(stat[perm])


def _diagonal(m, params, f: Finding, transposed, gen, dtype, factors) -> None:
    h = f.spec["h"]
    for name in f.spec["in"]:
        _on_axis(_view(params, name, transposed), 0, h, lambda x: x * factors[:, None])
    for name in f.spec["out"]:
        _on_axis(_view(params, name, transposed), 1, h, lambda x: x / factors[:, None])


def _rescaling(m, params, f, transposed, gen, dtype) -> None:
    _diagonal(m, params, f, transposed, gen, dtype, (0.5 + 1.5 * torch.rand(f.spec["h"], generator=gen)).to(dtype))


def _sign(m, params, f, transposed, gen, dtype) -> None:
    _diagonal(m, params, f, transposed, gen, dtype,
              (torch.randint(0, 2, (f.spec["h"],), generator=gen) * 2 - 1).to(dtype))


def _rotation(m, params, f, transposed, gen, dtype) -> None:
    h, Q = f.spec["h"], _orthogonal(f.spec["h"], gen, dtype)
    for name in [f.spec["w_in"], *f.spec["rows"]]:
        _on_axis(_view(params, name, transposed), 0, h, lambda x: Q @ x)
    for name in f.spec["out"]:
        _on_axis(_view(params, name, transposed), 1, h, lambda x: Q @ x)


def _rows_times(params, name, transposed, rows: torch.Tensor, A: torch.Tensor) -> None:
    """Rows `rows` of a weight (and of its bias) -> A @ those rows."""
    w = _view(params, name, transposed)
    w[rows] = A @ w[rows]
    b = _bias_of(params, name)
    if b is not None:
        params[b][rows] = A @ params[b][rows]


def _double_rotation(m, params, f, transposed, gen, dtype) -> None:
    s = f.spec
    dh = s["q"][1].shape[1]
    for group in s["groups"]:
        lead = group[0]
        S = _orthogonal(dh, gen, dtype)  # OV: W_V,g -> S W_V,g, W_O,h -> W_O,h S^T for the group's heads
        _rows_times(params, s["v"][0], transposed, s["v"][1][lead], S)
        w_o = _view(params, s["o"][0], transposed)
        for h in group:
            w_o[:, s["o"][1][h]] = w_o[:, s["o"][1][h]] @ S.T
        A, A_inv_t = rotary.element(s.get("rotary"), dh, gen, dtype) if s.get("rotary") is not None \
            else (lambda R: (R, R))(_orthogonal(dh, gen, dtype))
        _rows_times(params, s["k"][0], transposed, s["k"][1][lead], A_inv_t)
        for h in group:
            _rows_times(params, s["q"][0], transposed, s["q"][1][h], A)


def _scale(m, params, f, transposed, gen, dtype) -> None:
    w = _view(params, f.spec["w"], transposed)
    h = w.shape[0]
    lam = (0.5 + 1.5 * torch.rand(h if f.spec["per_channel"] else 1, generator=gen)).to(dtype)
    lam = lam.expand(h)
    for name in [f.spec["w"], *f.spec["biases"]]:
        _on_axis(_view(params, name, transposed), 0, h, lambda x: x * lam[:, None])


def _translation(m, params, f, transposed, gen, dtype) -> None:
    w = _view(params, f.spec["w"], transposed)
    w += torch.randn(w[0].shape, generator=gen, dtype=torch.float64).to(dtype)[None]  # the same u for every class
    if f.spec["b"]:
        params[f.spec["b"]] += float(torch.randn((), generator=gen))


ACT = {"permutation": _permutation, "rescaling": _rescaling, "sign": _sign, "rotation": _rotation,
       "double_rotation": _double_rotation, "scale": _scale, "translation": _translation}
