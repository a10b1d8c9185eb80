"""Find the mirror symmetries that a model's structure creates (paper.md 3), from its OpGraph.

* channels one permutation must move together (symexp.audit.channels, from a traced run's shapes): a hidden
  layer, a gated MLP, a depthwise block with its squeeze-excite, a whole residual stream: **permutation**;
  without shapes (torch.fx, module order), hidden units between an input map and output maps through
  per-unit ops (bias, norm, elementwise activation, pooling, dropout);
* on such a single path, **rescaling** when every activation is positively homogeneous (ReLU, LeakyReLU,
  max-pool), **sign** when every activation is odd (tanh, ...); with no nonlinearity at all: **rotation**;
  a gated MLP's up/down pair: **rescaling** (symexp.audit.gated);
* a norm gain (or a per-feature scale parameter) read only by Linear maps: **rescaling** per feature;
* a weight followed by BatchNorm/LayerNorm: positive **scale** symmetry (no mirror);
* logits read by a softmax (or the model's output, if trained with softmax cross-entropy): **translation**;
* attention heads: **double rotation** (symexp.audit.attention; grouped K/V, rotary embeddings).
A finding whose parameters are also used elsewhere (tied weights) is not a symmetry of the model and is
reported unclassified with the reason; every parameter role no finding explains is listed
(symexp.audit.coverage).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from symexp.audit.attention import find_attention
from symexp.audit.channels import channel_axis, find_spaces
from symexp.audit.coverage import unanalysed
from symexp.audit.gated import find_gated
from symexp.audit.graph import CONV_NDIM, ODD, POSITIVE_HOMOGENEOUS, Finding, Op, OpGraph

PRODUCERS = ("linear", "conv")


@dataclass
class Discovery:
    findings: list[Finding]
    unclassified: dict[str, str]  # parameter -> why no symmetry covers it
    graph: OpGraph
    notes: list[str] = field(default_factory=list)
    partial: dict[str, str] = field(default_factory=dict)  # parameter -> its roles no symmetry explains, and why
    covered: float = 0.0  # fraction of parameter values with every role explained


def discover(graph: OpGraph, softmax_output: bool | None = None) -> Discovery:
    """Every symmetry finding of the graph, and what is left unclassified (with reasons)."""
    reasons: dict[int, str] = {}  # op -> why no symmetry acts on its output side
    in_reasons: dict[int, str] = {}  # op -> why none acts on its input side
    spaces = find_spaces(graph, reasons, in_reasons) if graph.method == "run" else None  # needs shapes
    units = find_units(graph, reasons)  # the first reason given for an op is kept: the channel space's
    if spaces is not None:  # channel spaces replace the single-path permutations
        rotations = {f.params for f in units if f.symmetry == "rotation"}
        spaces = [f for f in spaces if f.params not in rotations]
        units = [f for f in units if f.symmetry != "permutation"] + spaces + find_gated(graph)
    found = units + find_gains(graph, reasons) + find_scale(graph)
    found += find_translation(graph, softmax_output) + find_attention(graph)
    if graph.method == "modules":
        for f in found:
            if f.symmetry == "rotation":  # adjacent modules: a functional nonlinearity between is invisible
                for i in f.ops:
                    reasons[i] = "module order shows no activation between these maps, but a functional one would be invisible"
            f.note = "; ".join(filter(None, [f.note, "inferred from module order"]))
        found = [f for f in found if f.symmetry != "rotation"]
    findings, tied = _merge(graph, found)
    by_op = {}
    for f in findings:
        for i in f.ops:
            by_op.setdefault(i, set()).add(f.symmetry)
    why = lambda p, axis: tied.get(p) or _why(graph, p, axis, reasons, in_reasons, by_op)  # noqa: E731
    unclassified, partial, covered = unanalysed(graph, findings, why)
    notes = [*graph.notes, f"coverage: {covered:.1%} of parameter values have every role explained by a symmetry; "
             f"{len(unclassified)} tensor(s) unclassified, {len(partial)} with roles unanalysed (reasons in the table)"]
    return Discovery(findings, unclassified, graph, notes, partial, covered)


def _why(graph: OpGraph, p: str, axis: int, reasons: dict[int, str], in_reasons: dict[int, str],
         by_op: dict[int, set]) -> str:
    users = sorted(graph.param_users.get(p, ()))
    if not users:
        return "not used in the traced forward pass"
    u = users[0]
    op = graph.ops[u]
    if axis == 1 and op.kind in ("linear", "conv", "mha"):  # the input side
        reason = in_reasons.get(u) or ("it reads the model input" if _reads_input(graph, op) else None)
        return f"{op.what} {op.label}: " + (reason or "no mirror symmetry recognised on its input channels")
    reason = reasons.get(u)
    if reason is None and u in by_op:
        return f"{op.what} {op.label}: its other parameters carry {', '.join(sorted(by_op[u]))}; none acts on this one"
    return f"{op.what} {op.label}: " + (reason or "no mirror symmetry recognised")


def _reads_input(graph: OpGraph, op: Op) -> bool:
    """Whether op's input is the model's input, reshaped at most."""
    while op.inputs and graph.ops[op.inputs[0]].kind in ("shape", "pass", "flatten", "scalar"):
        op = graph.ops[op.inputs[0]]
    return bool(op.inputs) and graph.ops[op.inputs[0]].kind == "input"


def _merge(graph: OpGraph, found: list[Finding]) -> tuple[list[Finding], dict[str, str]]:
    """One finding per (symmetry, parameters), counting repeats; drop those broken by tied parameters."""
    merged: dict[tuple, Finding] = {}
    for f in found:
        key = (f.symmetry, f.params)
        if key in merged:
            merged[key].ops |= f.ops
            merged[key].instances += 1
        else:
            merged[key] = f
    kept, tied = [], {}
    for f in merged.values():
        outside = {p: graph.param_users.get(p, set()) - f.ops for p in f.params}
        outside = {p: u for p, u in outside.items() if u}
        if outside:
            p, users = next(iter(outside.items()))
            other = ", ".join(sorted({graph.ops[u].label for u in users}))
            for q in f.params:
                tied.setdefault(q, f"{f.symmetry} of {f.layer} broken by tied weights: {p} is also used by "
                                   f"{other}, which the symmetry would have to move too")
            continue
        if f.instances > 1:
            f.note = "; ".join(filter(None, [f.note, f"applied {f.instances} times "
                                                     "(shared weights, or the model calls it again)"]))
        kept.append(f)
    return kept, tied


def _weight_out(graph: OpGraph, op: Op) -> int:
    return graph.param_shapes[op.params["weight"]][0]


def _ndim(op: Op, default: int | None) -> int | None:
    return len(op.meta["shape"]) if "shape" in op.meta else default


def _per_unit_params(graph: OpGraph, op: Op, h: int) -> list[str]:
    return [p for r, p in op.params.items() if r in ("weight", "bias", "arg0", "arg1")
            and graph.param_shapes[p] == (h,)]


def walk_units(graph: OpGraph, start: int, h: int, conv: bool):
    """Follow per-unit ops from `start`: (chain op indices, consumer op indices, stop reason)."""
    chain, cur, layout = [], start, "channels" if conv else "last"
    ndim = _ndim(graph.ops[start], CONV_NDIM.get(graph.ops[start].name) if conv else None)
    while len(graph.users(cur)) == 1:
        j = graph.users(cur)[0]
        u = graph.ops[j]
        if u.kind == "shape" and u.inputs[:1] == [cur]:  # Conv1D's views, LayerNorm2d's permutes (needs shapes)
            moved = _moved(graph, u, cur, layout)
            if moved is None:
                break
            layout, ndim = moved, len(u.meta["shape"])
            chain.append(j)
            cur = j
            continue
        if not _per_unit_step(graph, u, cur, h, layout, ndim):
            break
        chain.append(j)
        cur = j
        if u.kind == "flatten":
            layout = "flat"
            break
        if u.kind == "reduce":
            ndim = _ndim(u, None if ndim is None else ndim - (0 if u.meta.get("keepdim") else len(_dims(u))))
            layout = "last" if ndim == 2 else layout
    consumers = graph.users(cur)
    want = "conv" if layout == "channels" else "linear"
    if cur in graph.outputs or not consumers:
        return chain, [], "its output is a model output"
    for c in consumers:
        op = graph.ops[c]
        if op.kind != want or op.inputs[:1] != [cur]:
            return chain, [], f"its output feeds {op.what}, not only {want} maps"
        fan_in = graph.param_shapes[op.params["weight"]][1]
        if fan_in != h and not (layout == "flat" and fan_in % h == 0):
            return chain, [], f"{op.label} reads {fan_in} inputs, not the {h} units"
    return chain, consumers, ""


def _moved(graph: OpGraph, u: Op, cur: int, layout: str) -> str | None:
    """The units' layout after a reshape/permute that keeps them whole, None if it does not (or no shapes)."""
    shape, out = graph.ops[cur].meta.get("shape"), u.meta.get("shape")
    if not shape or not out or layout == "flat" or u.name in ("split", "chunk", "getitem"):
        return None
    mapped = channel_axis(graph, u, cur, 1 if layout == "channels" else len(shape) - 1, 1)
    if not isinstance(mapped, tuple) or mapped[1] != 1:
        return None
    return "channels" if mapped[0] == 1 and len(out) > 2 else "last" if mapped[0] == len(out) - 1 else None


def _per_unit_step(graph: OpGraph, u: Op, cur: int, h: int, layout: str, ndim: int | None) -> bool:
    """Whether op `u` (reading `cur`) acts on each of the h units separately, the same way for all."""
    if not u.inputs or u.inputs[0] != cur:
        return False
    if u.kind in ("bias", "scale"):
        return bool(_per_unit_params(graph, u, h))
    if u.kind == "norm":
        return _norm_per_unit(u, h, layout, _ndim(u, ndim))
    if u.kind in ("pool", "reduce"):
        return layout == "channels" and _keeps_channels(u, ndim)
    if u.kind == "flatten":
        return layout == "channels" and u.meta.get("start_dim", 0) == 1
    return u.kind in ("act", "pass", "scalar")


def _dims(op: Op) -> tuple:
    dims = op.meta.get("dim")
    return (dims,) if isinstance(dims, int) else tuple(dims or ())


def _norm_per_unit(op: Op, h: int, layout: str, ndim: int | None) -> bool:
    if op.name == "batch_norm":  # normalises dim 1
        return layout == "channels" or ndim in (None, 2)
    return layout == "last" and tuple(op.meta.get("normalized_shape", ())) == (h,)


def _keeps_channels(op: Op, ndim: int | None) -> bool:
    """Pooling and reductions over spatial dims only (dim 1 is the channel)."""
    if op.kind == "pool":
        return True
    dims = _dims(op)
    if not dims or ndim is None and any(d < 0 for d in dims):
        return False
    return all((d % ndim if ndim else d) >= 2 for d in dims)


def _is_maxlike(op: Op) -> bool:
    return op.kind in ("pool", "reduce") and ("max" in op.name)


def find_units(graph: OpGraph, reasons: dict[int, str]) -> list[Finding]:
    out = []
    for i, op in enumerate(graph.ops):
        if op.kind not in PRODUCERS:
            continue
        h = _weight_out(graph, op)
        chain, consumers, why = walk_units(graph, i, h, op.kind == "conv")
        if not consumers:
            reasons.setdefault(i, why)
            continue
        out.extend(_unit_findings(graph, i, h, chain, consumers))
    return out


def _unit_findings(graph: OpGraph, i: int, h: int, chain_ids: list[int], consumer_ids: list[int]) -> list[Finding]:
    op, chain = graph.ops[i], [graph.ops[j] for j in chain_ids]
    producer_rows = [op.params["bias"]] if "bias" in op.params else []
    rows = producer_rows + [p for c in chain if c.kind in ("bias", "scale", "norm") for p in _per_unit_params(graph, c, h)]
    outs = [graph.ops[c].params["weight"] for c in consumer_ids]
    ops = {i, *chain_ids, *consumer_ids}
    first_act = next((k for k, c in enumerate(chain) if c.kind == "act" or _is_maxlike(c)), None)
    nonlinear = first_act is not None or any(c.kind == "norm" for c in chain)
    base = {"h": h, "w_in": op.params["weight"], "rows": rows, "out": outs, "conv": op.kind == "conv",
            "parts": [(op.params["weight"], 0), *((r, 0) for r in rows), *((o, 1) for o in outs)],
            "act_axis": 1 if op.kind == "conv" else -1}
    if not nonlinear and not any(c.kind == "scale" for c in chain):
        params = tuple(sorted({op.params["weight"], *rows, *outs}))
        return [Finding("rotation", op.label, ops, params, base, "linear path: no nonlinearity between the maps")]
    act_ids = [j for j in chain_ids if graph.ops[j].kind == "act"]
    spec = {**base, "act": act_ids[0] if act_ids else None}
    found = [Finding("permutation", op.label, ops, tuple(sorted({op.params["weight"], *rows, *outs})), spec)]
    before = chain[:first_act] if first_act is not None else chain
    if any(c.kind == "norm" for c in chain[len(before):]):
        return found
    last_norm = max((k for k, c in enumerate(before) if c.kind == "norm"), default=None)
    if last_norm is None:
        rescale_in = [op.params["weight"], *producer_rows] + [
            p for c in before if c.kind in ("bias", "scale") for p in _per_unit_params(graph, c, h)]
    else:
        rescale_in = [p for c in before[last_norm:] for p in _per_unit_params(graph, c, h)]
    if not rescale_in:
        return found
    acts = [c for c in chain if c.kind == "act"]
    block = {**spec, "in": rescale_in}
    params = tuple(sorted({*rescale_in, *outs}))
    if all(a.name in POSITIVE_HOMOGENEOUS for a in acts):
        found.append(Finding("rescaling", op.label, ops, params, block, "" if acts else "linear path with a per-unit gain"))
    if all(_odd(a) for a in acts) and not any(_is_maxlike(c) for c in chain):
        found.append(Finding("sign", op.label, ops, params, block))
    return found


def _odd(op: Op) -> bool:
    if op.name == "hardtanh":
        return op.meta.get("min_val", -1.0) == -op.meta.get("max_val", 1.0)
    return op.name in ODD


def find_gains(graph: OpGraph, reasons: dict[int, str]) -> list[Finding]:
    """A norm gain (or per-feature scale parameter) read only by Linear/Conv maps: per-feature rescaling."""
    out = []
    for i, op in enumerate(graph.ops):
        if op.kind not in ("norm", "scale") or not op.params:
            continue
        shapes = [graph.param_shapes[p] for p in op.params.values()]
        h = shapes[0][0] if len(shapes[0]) == 1 else 0  # a per-feature gain is a vector
        gains = _per_unit_params(graph, op, h)
        conv = op.name == "batch_norm" and _ndim(op, None) != 2
        chain, consumers, why = walk_units(graph, i, h, conv) if gains else ([], [], "no per-feature gain")
        fed_by_map = graph.ops[op.inputs[0]].kind in PRODUCERS  # then its map's unit layer covers it
        if fed_by_map or not consumers or any(graph.ops[c].kind not in ("pass", "scalar", "shape") for c in chain):
            reasons.setdefault(i, why or "its output passes through a nonlinearity or reshaping")
            continue
        outs = [graph.ops[c].params["weight"] for c in consumers]
        spec = {"h": h, "in": gains, "out": outs, "conv": conv, "act": None}
        out.append(Finding("rescaling", op.label, {i, *chain, *consumers}, tuple(sorted({*gains, *outs})), spec,
                           "linear path: any rho != 0, the sign mirror included"))
    return out


def find_scale(graph: OpGraph) -> list[Finding]:
    """Weights whose output is normalised (only biases/dropout between): positive scale symmetry."""
    out = []
    for i, op in enumerate(graph.ops):
        if op.kind not in PRODUCERS:
            continue
        cur, path, biases = i, {i}, [op.params["bias"]] if "bias" in op.params else []
        h = _weight_out(graph, op)
        while len(graph.users(cur)) == 1 and graph.ops[graph.users(cur)[0]].kind in ("pass", "bias"):
            cur = graph.users(cur)[0]
            path.add(cur)
            biases += _per_unit_params(graph, graph.ops[cur], h) if graph.ops[cur].kind == "bias" else []
        norms = [u for u in graph.users(cur) if graph.ops[u].kind == "norm"]
        if len(graph.users(cur)) != 1 or not norms:
            continue
        norm = graph.ops[norms[0]]
        per_channel = norm.name == "batch_norm"
        if not per_channel and tuple(norm.meta.get("normalized_shape", ())) != (h,):
            continue
        spec = {"w": op.params["weight"], "biases": biases, "per_channel": per_channel}
        note = ("each output channel's weights can be scaled by any lambda > 0 (train mode: BatchNorm's running "
                "statistics do not follow in eval mode)" if per_channel else "the whole weight can be scaled by any "
                "lambda > 0") + "; exact up to the norm's eps; no mirror plane, no structure implied"
        out.append(Finding("scale", op.label, path | {norms[0]}, tuple(sorted({op.params["weight"], *biases})), spec, note))
    return out


def find_translation(graph: OpGraph, softmax_output: bool | None) -> list[Finding]:
    """Linear maps whose outputs are logits: a shift shared by all classes leaves the softmax unchanged."""
    out = []
    for i, op in enumerate(graph.ops):
        if op.kind != "linear":
            continue
        cur = i
        while len(graph.users(cur)) == 1 and _keeps_classes(graph.ops[graph.users(cur)[0]]):
            cur = graph.users(cur)[0]
        users = [graph.ops[u] for u in graph.users(cur)]
        explicit = len(users) == 1 and users[0].kind == "softmax" and _last_dim(users[0])
        implicit = cur in graph.outputs and not users and softmax_output is not False
        if not (explicit or implicit):
            continue
        note = "" if explicit or softmax_output else "if the model is trained with softmax cross-entropy"
        params = tuple(p for p in (op.params["weight"], op.params.get("bias")) if p)
        ops = {i} | ({graph.users(cur)[0]} if explicit else set())
        out.append(Finding("translation", op.label, ops, params,
                           {"w": op.params["weight"], "b": op.params.get("bias"), "explicit": explicit}, note))
    return out


def _keeps_classes(op: Op) -> bool:
    """Reshapes, and logits of several calls concatenated along another axis (a cached second half)."""
    if op.name == "cat":
        shape = op.meta.get("shape")
        return bool(shape) and op.meta.get("dim", 0) % len(shape) != len(shape) - 1
    return op.kind in ("pass", "scalar", "shape", "flatten")


def _last_dim(op: Op) -> bool:
    dim = op.meta.get("dim", -1)
    return dim == -1 or ("shape" in op.meta and dim == len(op.meta["shape"]) - 1)
