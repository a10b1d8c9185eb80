"""`audit(model)`: discover the mirror symmetries of a model and measure the structure they induced."""
from __future__ import annotations

import dataclasses

import pandas as pd
import torch
from torch import nn

from symexp.audit import measures as ms
from symexp.audit import rotary
from symexp.audit.discover import Discovery, discover
from symexp.audit.errors import AuditError
from symexp.audit.graph import Finding
from symexp.audit.spectra import spectrum_rows
from symexp.audit.trace import trace
from symexp.audit.units import head_blocks, inner_matrices, space_vectors, unit_parts
from symexp.audit.verify import verify as check

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
          softmax_output: bool | None = None, verify: bool = False, **thresholds_) -> pd.DataFrame:
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
    verify: apply a random element of every finding's group to a copy of the model and add, per finding,
    the relative change of its outputs in train and eval mode (measures verify_train, verify_eval; a change
    above the tolerance in a mode the finding claims is flagged as a bug of the audit).
    """
    th = thresholds(**thresholds_)
    theta = {n: p.detach()[None] for n, p in model.named_parameters()}
    _check_offsets(offsets, theta)
    found = discover(trace(model, example_inputs), softmax_output)
    theta0 = None if offsets is None else {n: torch.as_tensor(b).reshape(theta[n].shape).to(theta[n]) for n, b in offsets.items()}
    df = measure(found, theta, th, theta0)
    return verified(df, model, found) if verify else df


def verified(df: pd.DataFrame, model: nn.Module, found: Discovery) -> pd.DataFrame:
    """df with each finding's verification rows (one member: the live model) and a note that sums them up."""
    if found.graph.probe is None:
        df.attrs["notes"].append("not verified: the model was not run (no input it accepts)")
        return df
    results = check(model, found.graph.probe, found.findings, found.graph.transposed)
    rows = ms.Rows(1)
    bugs, worst = [], 0.0
    for f, r in zip(found.findings, results):
        for mode in ("train", "eval"):
            holds = r[mode] <= r["tol"]
            if mode in r["claims"]:
                worst = max(worst, r[mode])
                note = "holds" if holds else f"AUDIT BUG: this {f.symmetry} changed the output in {mode} mode"
                bugs += [] if holds else [f"{f.layer} ({f.symmetry}, {mode})"]
            else:
                note = ("also holds" if holds else f"not a symmetry in {mode} mode (claimed for "
                        f"{' and '.join(r['claims'])} only): BatchNorm's running statistics are buffers")
            rows.add(f.layer, f.symmetry, f"verify_{mode}", r[mode], threshold=r["tol"], note=note)
    out = pd.concat([df, _frame(rows)], ignore_index=True)
    out.attrs = {**df.attrs, "notes": [*df.attrs["notes"], f"verified {len(results)} findings (a random group element "
                 f"each, train and eval mode): largest change {worst:.1e} where claimed; "
                 + (f"AUDIT BUGS: {', '.join(bugs)}" if bugs else "no audit bug")]}
    return out


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
    theta = _canonical(found, theta)
    theta0 = None if theta0 is None else _canonical(found, theta0)
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
    for name, why in found.partial.items():
        rows.add(name, "unclassified", "unanalysed_roles", float(theta[name][0].numel()), note=why)
    df = _frame(rows)
    df.attrs["trace"] = TRACED[found.graph.method]
    df.attrs["notes"] = list(found.notes)
    df.attrs["covered"] = found.covered
    return df


def _frame(rows: ms.Rows) -> pd.DataFrame:
    """The rows as a table of `COLUMNS`, counts as nullable integers."""
    df = pd.DataFrame(rows.rows, columns=COLUMNS)
    df["count"], df["of"] = df["count"].astype("Int64"), df["of"].astype("Int64")
    return df


def _canonical(found: Discovery, theta: Tensors) -> Tensors:
    """Weights stored [in, out] (Conv1D) as [out, in], the layout every finding's spec assumes."""
    return {n: t.transpose(1, 2) if n in found.graph.transposed else t for n, t in theta.items()}


def _units(rows, f: Finding, theta, th, origin, found: Discovery) -> None:
    V0 = space_vectors(f.spec, origin) if origin else None
    ms.permutation_rows(rows, f.layer, space_vectors(f.spec, theta), th, V0)
    act = found.graph.ops[f.spec["act"]] if f.spec.get("act") is not None else None
    if act is not None and "amax_dim1" in act.meta:
        amax = act.meta["amax_dim1" if f.spec["act_axis"] == 1 else "amax_last"]
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
    """Per query head the invariants' ranks; per K/V group (a head, without grouped K/V) the directions
    switched off; under rotary embeddings, QK's frequency blocks switched off instead of QK ranks."""
    w = head_blocks(f.spec, theta)
    M, H, dh, _ = w["q"].shape
    groups, partner = f.spec["groups"], f.spec.get("rotary")
    G = len(groups)
    heads = [f"{f.layer}.h{h}" for h in range(H)]
    names = heads if G == H else [f"{f.layer}.kv{g}" for g in range(G)]
    g = _Grouped(groups, M)
    if G < H:  # each query head's invariants; the directions a rotation can switch off are its group's
        ms.rank_rows(rows, heads, "double_rotation", ms.product_core(w["o"], w["v"]), dh, th, prefix="ov_", off=False)
        if partner is None:
            ms.rank_rows(rows, heads, "double_rotation", ms.product_core(w["q"].transpose(-2, -1), w["k"]), dh, th,
                         prefix="qk_", off=False)
    ms.rank_rows(rows, names, "double_rotation", ms.product_core(g.stacked(w["o"]), g.lead(w["v"])), dh, th,
                 prefix="ov_")
    g_ov = torch.cat([g.lead(w["v"]), g.side(w["o"].transpose(-2, -1))], dim=-1)
    rows.add(f.layer, "double_rotation", "ov_direction_distance_min",
             ms.direction_distance(g_ov.flatten(0, 1)).view(M, G).amin(1))
    if partner is not None:
        off, n_blocks = rotary.blocks_off(w, g.order, g.first, g.r, partner, th.dead_tau)
        for k, name in enumerate(names):
            rows.add(name, "double_rotation", "qk_off_blocks", off[:, k], of=n_blocks, threshold=th.dead_tau,
                     note="rotary 2x2 blocks with W_Q^T R(delta) W_K = 0 for every delta (both invariants zero)")
        return
    q_t = w["q"].transpose(-2, -1)
    ms.rank_rows(rows, names, "double_rotation", ms.product_core(g.stacked(q_t), g.lead(w["k"])), dh, th, prefix="qk_")
    g_qk = torch.cat([g.lead(w["k"]), g.side(w["q"])], dim=-1)
    rows.add(f.layer, "double_rotation", "qk_direction_distance_min",
             ms.direction_distance(g_qk.flatten(0, 1)).view(M, G).amin(1))
    if origin:
        w0 = head_blocks(f.spec, origin)
        G0 = [torch.cat([g.lead(w0["k"]), g.side(w0["q"])], dim=-1),
              torch.cat([g.lead(w0["v"]), g.side(w0["o"].transpose(-2, -1))], dim=-1)]
        on = sum(ms.origin_directions(x.flatten(0, 1), th).view(M, G).sum(1) for x in G0)
        rows.add(f.layer, "double_rotation", "origin_on_plane", on, of=2 * G * dh, threshold=th.origin_rtol,
                 note=ms.ORIGIN_NOTE)
    if G == H:
        qk, ov = w["q"].transpose(-2, -1) @ w["k"], w["o"] @ w["v"]
        units = torch.cat([qk.flatten(2), ov.flatten(2)], dim=-1)  # each head's invariants, rotation-free
        units0 = None
        if origin:
            units0 = torch.cat([(w0["q"].transpose(-2, -1) @ w0["k"]).flatten(2), (w0["o"] @ w0["v"]).flatten(2)],
                               dim=-1)
        ms.permutation_rows(rows, f"{f.layer}.heads", units, th, units0, note="heads as units (W_Q^T W_K, W_O W_V)")
    if f.spec["k_bias"]:
        name, k_rows = f.spec["k_bias"]
        rows_k = k_rows.flatten().unique()  # K's rows, each once (a group's rows repeat over its query heads)
        b, wk = theta[name][:, rows_k], theta[f.spec["k"][0]][:, rows_k]
        rel = b.double().norm(dim=1) / torch.cat([wk.flatten(1), b], dim=1).double().norm(dim=1).clamp_min(1e-300)
        rows.add(f.layer, "translation", "key_bias_share", rel,
                 note="q . b_K is the same for every key, so the softmax cancels it: b_K is redundant")


class _Grouped:
    """Query heads arranged by K/V group: `lead` takes one (K/V) block per group, `stacked` and `side`
    concatenate the query heads of each group (rows for products, columns for the inner directions)."""

    def __init__(self, groups: list[list[int]], M: int):
        self.order = torch.tensor([h for grp in groups for h in grp])
        self.first = torch.tensor([grp[0] for grp in groups])
        self.G, self.r, self.M = len(groups), len(groups[0]), M

    def lead(self, x):  # [M, H, a, b] -> [M, G, a, b]
        return x[:, self.first]

    def stacked(self, x):  # [M, H, a, dh] -> [M, G, r*a, dh]
        return x[:, self.order].reshape(self.M, self.G, self.r * x.shape[2], x.shape[3])

    def side(self, x):  # [M, H, dh, b] -> [M, G, dh, r*b]
        y = x[:, self.order].reshape(self.M, self.G, self.r, *x.shape[2:])
        return y.permute(0, 1, 3, 2, 4).reshape(self.M, self.G, x.shape[2], self.r * x.shape[3])


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
