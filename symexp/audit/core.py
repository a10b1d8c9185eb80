"""`audit(model)`: discover the mirror symmetries of a model and measure the structure they induced."""
from __future__ import annotations

import dataclasses

import pandas as pd
import torch
from torch import nn

from symexp.audit import measures as ms
from symexp.audit.discover import Discovery, discover
from symexp.audit.errors import AuditError
from symexp.audit.graph import Finding
from symexp.audit.spectra import spectrum_rows
from symexp.audit.trace import trace
from symexp.audit.units import head_blocks, inner_matrices, unit_parts

TRACED = {"run": "traced by running the model", "fx": "traced with torch.fx",
          "modules": "structure read from module order (not traced)"}
COLUMNS = ["member", "layer", "symmetry", "measure", "value", "threshold", "count", "of", "note"]
Tensors = dict[str, torch.Tensor]


def thresholds(**given) -> ms.Thresholds:
    """Thresholds from keyword arguments; an unknown name or a negative value is one clear error."""
    allowed = {f.name for f in dataclasses.fields(ms.Thresholds)}
    for k, v in given.items():
        if k not in allowed:
            raise AuditError(f"audit: unknown threshold {k!r}; allowed: {', '.join(sorted(allowed))}")
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise AuditError(f"audit: threshold {k}={v!r}; allowed: a number >= 0")
    return ms.Thresholds(**{k: float(v) for k, v in given.items()})


def audit(model: nn.Module, example_inputs=None, *, offsets: Tensors | None = None,
          softmax_output: bool | None = None, **thresholds_) -> pd.DataFrame:
    """One row per layer x symmetry x measure (columns `COLUMNS`) for a live model.

    example_inputs: a tensor, tuple or dict the model's forward accepts; adds the data-dependent view
    (units never active on them) and traces exactly what runs. offsets: {parameter name: theta_0}, the
    point weight decay pulls toward when theta = raw + b (breaking=offset: theta_0 = b); mirror planes
    that miss it are reported (`origin_on_plane`). softmax_output: whether the model's outputs are logits
    of a softmax loss (None: report the translation symmetry conditionally).
    Thresholds (symexp.audit.Thresholds; defaults = symexp's metric defaults): dead_tau=0.1 (unit at zero:
    ||v_i|| < dead_tau max_j ||v_j||), unit_tol=0.1 (duplicate pair: 2||v_i - v_j||^2 / (||v_i||^2 + ||v_j||^2)
    < unit_tol), rank_tau=1e-3 and rank_atol=0 (direction off: sigma <= max(rank_tau sigma_1, rank_atol)),
    active_atol=0 (never active: max |activation| <= active_atol), origin_rtol=1e-6 (theta_0 on a plane).
    """
    th = thresholds(**thresholds_)
    theta = {n: p.detach()[None] for n, p in model.named_parameters()}
    _check_offsets(offsets, theta)
    found = discover(trace(model, example_inputs), softmax_output)
    theta0 = None if offsets is None else {n: torch.as_tensor(b).reshape(theta[n].shape).to(theta[n]) for n, b in offsets.items()}
    return measure(found, theta, th, theta0)


def _check_offsets(offsets, theta: Tensors) -> None:
    for name, b in (offsets or {}).items():
        if name not in theta:
            raise AuditError(f"audit: offsets[{name!r}]: not a parameter of the model; allowed: {', '.join(theta)}")
        if torch.as_tensor(b).numel() != theta[name].numel():
            raise AuditError(f"audit: offsets[{name!r}] has {torch.as_tensor(b).numel()} entries; "
                             f"the parameter has shape {tuple(theta[name].shape[1:])}")


def measure(found: Discovery, theta: Tensors, th: ms.Thresholds, theta0: Tensors | None = None) -> pd.DataFrame:
    """Rows for every finding on weights `theta` stacked over members ``[M, ...]``."""
    members = next(iter(theta.values())).shape[0] if theta else 1
    rows = ms.Rows(members)
    for f in found.findings:
        shifted = theta0 is not None and any(p in theta0 for p in f.params)
        origin = {n: theta0.get(n, torch.zeros_like(theta[n])) for n in f.params} if shifted else None
        start = len(rows.rows)
        MEASURE[f.symmetry](rows, f, theta, th, origin, found)
        for r in rows.rows[start:] if f.note else ():
            r["note"] = "; ".join(filter(None, [r["note"], f.note]))
    spectrum_rows(rows, found.graph, theta, th)
    for name, why in found.unclassified.items():
        rows.add(name, "unclassified", "parameters", float(theta[name][0].numel()), note=why)
    df = pd.DataFrame(rows.rows, columns=COLUMNS)
    df["count"], df["of"] = df["count"].astype("Int64"), df["of"].astype("Int64")
    df.attrs["trace"] = TRACED[found.graph.method]
    df.attrs["notes"] = list(found.notes)
    return df


def _units(rows, f: Finding, theta, th, origin, found: Discovery) -> None:
    parts = unit_parts(f.spec, theta, "w_in")
    V0 = unit_parts(f.spec, origin, "w_in").vectors() if origin else None
    ms.permutation_rows(rows, f.layer, parts.vectors(), th, V0)
    act = found.graph.ops[f.spec["act"]] if f.spec.get("act") is not None else None
    if act is not None and "amax_dim1" in act.meta:
        amax = act.meta["amax_dim1" if f.spec["conv"] else "amax_last"]
        ms.never_active_rows(rows, f.layer, amax, th, _input_shapes(found))


def _zero_units(rows, f: Finding, theta, th, origin, found) -> None:
    parts0 = unit_parts(f.spec, origin, "in") if origin else None
    ms.zero_unit_rows(rows, f.layer, f.symmetry, unit_parts(f.spec, theta, "in"), th, parts0)


def _rotation(rows, f: Finding, theta, th, origin, found) -> None:
    (left, right), G = inner_matrices(f.spec, theta)
    ms.rank_rows(rows, [f.layer], "rotation", ms.product_core(left, right)[:, None], min(left.shape[1], *right.shape[1:]), th)
    rows.add(f.layer, "rotation", "direction_distance_min", ms.direction_distance(G))
    if origin:
        rows.add(f.layer, "rotation", "origin_on_plane", ms.origin_directions(inner_matrices(f.spec, origin)[1], th),
                 of=f.spec["h"], threshold=th.origin_rtol, note=ms.ORIGIN_NOTE)


def _double_rotation(rows, f: Finding, theta, th, origin, found) -> None:
    w = head_blocks(f.spec, theta)
    M, H, dh, _ = w["q"].shape
    qk = w["q"].transpose(-2, -1) @ w["k"]  # [M, H, d_in, d_in]
    ov = w["o"] @ w["v"]  # [M, H, d_out, d_in]
    cores = {"qk_": ms.product_core(w["q"].transpose(-2, -1), w["k"]), "ov_": ms.product_core(w["o"], w["v"])}
    for name, core in cores.items():
        ms.rank_rows(rows, [f"{f.layer}.h{h}" for h in range(H)], "double_rotation", core, dh, th, prefix=name)
    g_qk = torch.cat([w["q"], w["k"]], dim=-1).flatten(0, 1)
    g_ov = torch.cat([w["v"], w["o"].transpose(-2, -1)], dim=-1).flatten(0, 1)
    for name, G in (("qk_", g_qk), ("ov_", g_ov)):
        rows.add(f.layer, "double_rotation", name + "direction_distance_min", ms.direction_distance(G).view(M, H).amin(1))
    heads = torch.cat([qk.flatten(2), ov.flatten(2)], dim=-1)  # each head's invariants, rotation-free
    heads0 = None
    if origin:
        w0 = head_blocks(f.spec, origin)
        G0 = [torch.cat(p, dim=-1).flatten(0, 1) for p in ((w0["q"], w0["k"]), (w0["v"], w0["o"].transpose(-2, -1)))]
        on = sum(ms.origin_directions(g, th).view(M, H).sum(1) for g in G0)
        rows.add(f.layer, "double_rotation", "origin_on_plane", on, of=2 * H * dh, threshold=th.origin_rtol,
                 note=ms.ORIGIN_NOTE)
        heads0 = torch.cat([(w0["q"].transpose(-2, -1) @ w0["k"]).flatten(2), (w0["o"] @ w0["v"]).flatten(2)], dim=-1)
    ms.permutation_rows(rows, f"{f.layer}.heads", heads, th, heads0, note="heads as units (W_Q^T W_K, W_O W_V)")
    if f.spec["k_bias"]:
        name, start, stop = f.spec["k_bias"]
        b, wk = theta[name][:, start:stop], theta[f.spec["k"][0]][:, f.spec["k"][1]:f.spec["k"][2]]
        rel = b.double().norm(dim=1) / torch.cat([wk.flatten(1), b], dim=1).double().norm(dim=1).clamp_min(1e-300)
        rows.add(f.layer, "translation", "key_bias_share", rel,
                 note="q . b_K is the same for every key, so the softmax cancels it: b_K is redundant")


def _scale(rows, f: Finding, theta, th, origin, found) -> None:
    w = theta[f.spec["w"]].flatten(1).double()
    rows.add(f.layer, "scale", "weight_norm", w.norm(dim=1))
    for name in f.spec["biases"]:
        rows.add(f.layer, "scale", "redundant_bias_norm", theta[name].flatten(1).double().norm(dim=1),
                 note="cancelled by the normalisation's mean subtraction" if f.spec["per_channel"]
                 else "its mean over features is cancelled by the normalisation")


def _translation(rows, f: Finding, theta, th, origin, found) -> None:
    w = theta[f.spec["w"]].flatten(2).double()
    if f.spec["b"]:
        w = torch.cat([w, theta[f.spec["b"]].double()[:, :, None]], dim=-1)
    shared = w.mean(1).norm(dim=1) * w.shape[1] ** 0.5 / w.flatten(1).norm(dim=1).clamp_min(1e-300)
    rows.add(f.layer, "translation", "shared_component", shared,
             note="||P_1 theta|| / ||theta||, P_1 the mean over classes: the part a softmax cannot see")


def _input_shapes(found: Discovery) -> str:
    shapes = [op.meta.get("shape") for op in found.graph.ops if op.kind == "input"]
    return ", ".join(str(list(s)) for s in shapes if s)


MEASURE = {"permutation": _units, "rescaling": _zero_units, "sign": _zero_units, "rotation": _rotation,
           "double_rotation": _double_rotation, "scale": _scale, "translation": _translation}
