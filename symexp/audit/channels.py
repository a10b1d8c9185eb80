"""Channel spaces: every tensor whose channels one permutation must move together, found by flooding the
traced graph from a map's output channels (needs the shapes of a traced run).

A permutation P of the h channels of a tensor leaves the model unchanged when it is applied to every
*writer* (a map whose output rows are those channels: Linear/Conv rows and bias, an embedding's columns),
to every per-channel parameter on the way (norm gains and biases, depthwise filters, layer scales, added
position embeddings, a class token) and, inversely, to every *reader* (a Linear/Conv's input columns),
provided everything in between acts on each channel the same way: elementwise ops, norms over the
channels (LayerNorm, RMSNorm: a mean over the channels is permutation invariant), BatchNorm with its
running statistics, depthwise convs, pooling, reshapes that keep the channel axis whole, permutes, and
adds/multiplies of tensors in the same space (the residual stream's adds, a gated MLP's gate * up, a
squeeze-excite gate). One hidden layer is the smallest space; a residual stream (every block's output
map, norm gains, every block's input maps, the embedding and a tied LM head) is one large space.
The flood stops, and claims nothing, at anything else: the model's output, a reshape across the
channels (heads: symexp.audit.attention), a grouped conv, attention products.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from symexp.audit.graph import SOFTMAX, UNARY, Finding, Op, OpGraph

ELEMENTWISE = {"act", "pass", "scalar", "bias", "scale", "add", "softmax"}
SPLITS = {"split", "chunk", "unbind"}


@dataclass
class Space:
    h: int
    tensors: dict[int, tuple[int, int]] = field(default_factory=dict)  # op -> (channel axis, entries per channel)
    parts: set[tuple[str, int]] = field(default_factory=set)  # (parameter, an axis the permutation moves):
    # a map that reads the channels and writes them back (x * sigmoid(W x)) is moved on both axes, P W P^T
    writers: list[int] = field(default_factory=list)
    readers: list[int] = field(default_factory=list)
    ops: set[int] = field(default_factory=set)
    batch_norms: list[int] = field(default_factory=list)  # their running statistics move too (buffers)
    broadcast: list[tuple[int, int]] = field(default_factory=list)  # (operand, axis): must not depend on channels
    escape: str = ""


def find_spaces(graph: OpGraph, reasons: dict[int, str], in_reasons: dict[int, str]) -> list[Finding]:
    """One permutation finding per channel space that closes; reasons for the maps of those that do not
    (`reasons` for writers' output rows, `in_reasons` for readers' input columns)."""
    out, seen = [], set()
    for i, op in enumerate(graph.ops):
        axis = _write_axis(graph, op)
        if axis is None or i in seen:
            continue
        s = flood(graph, i, axis)
        seen |= set(s.tensors)
        if s.escape:
            why = f"channels shared with {_describe(graph, s)}: {s.escape}"
            for j in s.writers:
                reasons.setdefault(j, why)
            for j in s.readers:
                in_reasons.setdefault(j, why)
            continue
        out.append(_finding(graph, s))
    return out


def _write_axis(graph: OpGraph, op: Op) -> int | None:
    shape = op.meta.get("shape")
    if not shape or op.kind not in ("linear", "conv", "embedding"):
        return None
    return 1 if op.kind == "conv" else len(shape) - 1


def _describe(graph: OpGraph, s: Space) -> str:
    labels = [graph.ops[w].label for w in s.writers] or [graph.ops[min(s.tensors)].label]
    return labels[0] if len(labels) == 1 else f"{labels[0]} and {len(labels) - 1} more maps"


def _finding(graph: OpGraph, s: Space) -> Finding:
    first = graph.ops[s.writers[0]]
    adds = len(s.writers) > 1 and any(graph.ops[t].kind == "add" for t in s.tensors)  # a residual connection
    layer = f"{first.label}:stream" if adds else first.label
    acts = [t for t in sorted(s.tensors) if graph.ops[t].kind == "act" and s.tensors[t][1] == 1]
    act = acts[0] if acts else None
    spec = {"h": s.h, "parts": sorted(s.parts), "act": act,
            "act_axis": None if act is None else s.tensors[act][0],
            "batch_norms": [graph.ops[b].params["weight"] for b in s.batch_norms if "weight" in graph.ops[b].params],
            "writers": [graph.ops[w].params["weight"] for w in s.writers]}
    note = "" if len(s.writers) == 1 else (f"one permutation of {s.h} channels written by {len(s.writers)} maps "
                                           f"and read by {len(s.readers)}" + (" (a residual stream)" if adds else ""))
    return Finding("permutation", layer, set(s.ops), tuple(sorted({p for p, _ in s.parts})), spec, note)


def flood(graph: OpGraph, start: int, axis: int) -> Space:
    s = Space(graph.ops[start].meta["shape"][axis])
    queue = deque([(start, axis, 1)])
    while queue and not s.escape:
        t, ax, r = queue.popleft()
        if t in s.tensors:
            if s.tensors[t] != (ax, r):
                s.escape = f"{graph.ops[t].what} meets the channels on two different axes"
            continue
        s.tensors[t] = (ax, r)
        s.ops.add(t)
        if t in graph.outputs:
            s.escape = "they are a model output"
            break
        _produced(graph, s, t, queue)
        for u in graph.users(t):
            if not s.escape:
                _used(graph, s, u, t, queue)
    if not s.escape:
        for operand, ax in s.broadcast:
            if not _invariant(graph, s, operand, set()):
                s.escape = f"{graph.ops[operand].what} scales them all by a factor computed outside the channels"
                break
    return s


def _shape(graph: OpGraph, t: int):
    return graph.ops[t].meta.get("shape")


def _produced(graph: OpGraph, s: Space, t: int, queue) -> None:
    """The op that made tensor t (on channel axis ax): a writer, or pass the space on to its inputs."""
    op, (ax, r) = graph.ops[t], s.tensors[t]
    shape = _shape(graph, t)
    if op.kind in ("linear", "conv", "embedding"):
        if r != 1 or ax != (1 if op.kind == "conv" else len(shape) - 1):
            s.escape = f"{op.label}'s output meets them on another axis"
            return
        s.writers.append(t)
        s.parts.add((op.params["weight"], 1 if op.kind == "embedding" else 0))
        if "bias" in op.params:
            s.parts.add((op.params["bias"], 0))
        return
    if op.kind == "item":
        _split(graph, s, op.inputs[0], queue, item=t)
        return
    if op.kind in ("input", "const"):
        s.escape = f"a {'model input' if op.kind == 'input' else 'constant tensor (a buffer)'} is added to them"
        return
    if op.kind == "param_view":
        s.ops.add(t)
        _param_view(graph, s, op, ax, shape)
        return
    _link(graph, s, op, t, ("out", ax, r), queue)


def _used(graph: OpGraph, s: Space, u: int, t: int, queue) -> None:
    op, (ax, r) = graph.ops[u], s.tensors[t]
    shape = _shape(graph, t)
    if op.name in SPLITS:
        _split(graph, s, u, queue)
        return
    if op.kind in ("linear", "conv") and op.inputs[:1] == [t]:
        fan_in = graph.param_shapes[op.params["weight"]][1]
        ok = (ax == (1 if op.kind == "conv" else len(shape) - 1) and fan_in == s.h * r
              and (r == 1 or op.kind == "linear"))
        if not ok:
            s.escape = f"{op.label} reads them on another axis"
            return
        s.readers.append(u)
        s.ops.add(u)
        s.parts.add((op.params["weight"], 1))
        return
    _link(graph, s, op, u, ("in", ax, r, t), queue)


def _link(graph: OpGraph, s: Space, op: Op, idx: int, known, queue) -> None:
    """Op `idx` maps channels elementwise (after axis bookkeeping): join its output and tensor inputs."""
    out_shape = _shape(graph, idx)
    if out_shape is None:
        s.escape = f"{op.what} has no traced shape"
        return
    if known[0] == "in":
        _, ax, r, t = known
        mapped = channel_axis(graph, op, t, ax, r)
        if mapped == "invariant":
            s.ops.add(idx)
            return
        if isinstance(mapped, str):
            s.escape = f"{op.what}{' ' + op.label if op.params else ''} {mapped}"
            return
        ax_out, r_out = mapped
        queue.append((idx, ax_out, r_out))
    else:
        _, ax_out, r_out = known
    s.ops.add(idx)
    n_out = len(out_shape)
    for role, p in op.params.items():  # per-channel parameters (aligned from the right, as broadcasting)
        if role in ("weight", "bias", "arg0", "arg1") or op.kind in ("bias", "scale"):
            _param_part(graph, s, op, ax_out, n_out, p)
    if op.name == "batch_norm":
        s.batch_norms.append(idx)
    for j in op.inputs:
        if graph.ops[j].kind == "const" and op.name == "batch_norm":
            continue  # running statistics: moved with the batch norm's parameters
        shape_j = _shape(graph, j)
        if shape_j is None:
            s.escape = f"{op.what} reads an operand without a traced shape"
            return
        ax_j = _backward(graph, op, j, ax_out, r_out, n_out)
        if ax_j is None:
            s.escape = f"{op.what} mixes them with a tensor of another layout"
            return
        if shape_j[ax_j] == 1 and s.h != 1:
            s.broadcast.append((j, ax_j))
        else:
            queue.append((j, ax_j, r_out))


def _param_view(graph: OpGraph, s: Space, op: Op, ax: int, shape) -> None:
    """A parameter expanded or reshaped into the channels (a class token, timm's gamma.reshape(1, -1, 1, 1))."""
    name = next(iter(op.params.values()))
    p_shape = graph.param_shapes[name]
    if op.name == "expand":
        _param_part(graph, s, op, ax, len(shape))
        return
    if op.name == "getitem":  # wpe.weight[:T]: positions sliced, channels whole
        axes = [k for k in range(len(p_shape)) if _indexed(op, p_shape, k, 1) == (ax, 1)]
    else:
        axes = [k for k in range(len(p_shape)) if op.name in ("view", "reshape", "unsqueeze", "squeeze", "flatten")
                and _reshaped(p_shape, shape, k, 1) == (ax, 1)]
    if axes:
        s.parts.add((name, axes[0]))
    else:
        s.escape = f"{name} is reshaped into them"


def _param_part(graph: OpGraph, s: Space, op: Op, ax: int, ndim: int, name: str | None = None) -> None:
    """A parameter of an op on the channels: per channel when its axis aligned with theirs has h entries."""
    name = name or next(iter(op.params.values()))
    shape = graph.param_shapes[name]
    k = 0 if op.kind in ("norm", "gconv") else ax - (ndim - len(shape))  # others broadcast from the right
    if 0 <= k < len(shape) and shape[k] == s.h:
        s.parts.add((name, k))
    elif 0 <= k < len(shape) and shape[k] != 1:
        s.escape = f"{name} meets them with {shape[k]} entries on their axis"


def channel_axis(graph: OpGraph, op: Op, t: int, ax: int, r: int):
    """(axis, entries per channel) of the channels in op's output, 'invariant' when op reduces over them,
    or a string saying why the channels do not pass."""
    shape, out = _shape(graph, t), op.meta.get("shape")
    n, n_out = len(shape), len(out)
    name = op.name
    if op.kind in ELEMENTWISE or name in UNARY or name in SOFTMAX:
        if op.kind == "softmax" or op.name in SOFTMAX:
            return (ax + n_out - n, r) if r == 1 else "normalises across a flattened axis"
        return ax + n_out - n, r
    if op.kind == "norm":
        if r != 1:
            return "normalises a flattened axis"
        if name == "batch_norm":
            return (ax, 1) if ax == 1 else "normalises them on another axis"
        norm = tuple(op.meta.get("normalized_shape", ()))
        return (ax, 1) if norm == (shape[-1],) and ax == n - 1 else "normalises over them and other axes"
    if op.kind == "gconv":
        w = graph.param_shapes[op.params["weight"]]
        return (1, 1) if ax == 1 and r == 1 and w[0] == op.meta.get("groups", 1) == shape[1] and w[1] == 1 else \
            "is a grouped conv that is not depthwise"
    if op.kind in ("pool",):
        return (1, r) if ax == 1 else "pools over them"
    if op.kind == "reduce" or name in ("norm", "amax", "amin", "max", "min", "std", "var", "logsumexp"):
        dims = op.meta.get("dim")
        dims = tuple(range(n)) if dims is None else (dims,) if isinstance(dims, int) else tuple(dims)
        dims = {d % n for d in dims}
        if ax in dims:
            return "invariant"
        return (ax, r) if op.meta.get("keepdim") else (ax - sum(d < ax for d in dims), r)
    if name in ("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze"):
        return _reshaped(shape, out, ax, r)
    if name in ("permute", "transpose", "t", "movedim"):
        order = axis_order(op, n)
        return (order.index(ax), r) if order else "moves axes in a way the audit does not follow"
    if name == "expand":
        return ax + n_out - n, r
    if name == "getitem":
        return _indexed(op, shape, ax, r)
    if name in ("cat", "stack"):
        d = op.meta.get("dim", 0) % (n if name == "cat" else n + 1)
        if name == "cat":
            return (ax, r) if d != ax else "are concatenated with other channels"
        return (ax + (d <= ax), r)
    if name == "repeat_interleave":
        d = op.meta.get("dim")
        return (ax, r) if d is not None and d % n != ax else "are repeated"
    return "mixes them (or is not an operation the audit follows)"


def _reshaped(shape, out, ax: int, r: int):
    prefix, size = math.prod(shape[:ax]), shape[ax]
    for j in range(len(out)):
        if math.prod(out[:j]) == prefix:
            if out[j] == size:
                return j, r
            if out[j] % size == 0 and r == 1:  # merged with the axes after it: channel-major blocks
                return j, out[j] // size
        if math.prod(out[:j]) > prefix:
            break
    return "are reshaped across their axis (split into heads, or merged)"


def axis_order(op: Op, n: int) -> list[int] | None:
    """The input axis behind each output axis of a permute, transpose or t; None if not one the audit follows."""
    args = [v for k, v in sorted(op.meta.items()) if k.startswith("arg") or k == "dims"]
    if op.name == "t":
        return [1, 0] if n == 2 else None
    if op.name == "permute":
        dims = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list)) else args
        return [d % n for d in dims] if len(dims) == n else None
    if op.name == "transpose":
        a, b = (op.meta.get("arg1", op.meta.get("dim0")), op.meta.get("arg2", op.meta.get("dim1")))
        if not isinstance(a, int) or not isinstance(b, int):
            return None
        order = list(range(n))
        order[a % n], order[b % n] = order[b % n], order[a % n]
        return order
    return None


def _indexed(op: Op, shape, ax: int, r: int):
    index = op.meta.get("arg1")
    index = index if isinstance(index, tuple) else (index,)
    if (sum(i is Ellipsis for i in index) > 1
            or any(not isinstance(i, (int, slice, type(None), type(Ellipsis))) for i in index)):
        return "index them with tensors"
    n = len(shape)
    used = sum(i is not None and i is not Ellipsis for i in index)
    expanded = []
    for i in index:
        expanded += [slice(None)] * (n - used) if i is Ellipsis else [i]
    expanded += [slice(None)] * (n - sum(i is not None for i in expanded))
    dim, out_dim = 0, 0
    for i in expanded:
        if i is None:
            out_dim += 1
            continue
        if dim == ax:
            return (out_dim, r) if i == slice(None) else "are sliced or indexed"
        out_dim += 0 if isinstance(i, int) else 1
        dim += 1
    return "are indexed in a way the audit does not follow"


def _backward(graph: OpGraph, op: Op, j: int, ax_out: int, r_out: int, n_out: int) -> int | None:
    """The axis of input j that maps onto the output's channel axis."""
    shape = _shape(graph, j)
    if op.name == "cat":
        return ax_out if len(shape) == n_out else None
    if op.kind in ELEMENTWISE or op.kind in ("norm", "gconv", "pool") or op.name in UNARY or op.name == "expand":
        a = ax_out - (n_out - len(shape))  # broadcasting aligns axes from the right
        return a if a >= 0 else None
    for a in range(len(shape)):
        for r in {1, r_out}:
            if channel_axis(graph, op, j, a, r) == (ax_out, r_out):
                return a
    return None


def _split(graph: OpGraph, s: Space, split_idx: int, queue, item=None) -> None:
    """split/chunk/unbind: along another axis each piece keeps the channels; along theirs, they escape."""
    op = graph.ops[split_idx]
    src = op.inputs[0]
    d = op.meta.get("dim", 0) % len(_shape(graph, src))
    unbind = op.name == "unbind"
    if item is not None:
        ax, r = s.tensors[item]
        ax_in = ax + (unbind and ax >= d)
    else:
        ax_in, r = s.tensors[src]
    s.ops.add(split_idx)
    if d == ax_in:
        s.escape = f"a {op.name} cuts them apart (a fused projection: see its heads)"
        return
    queue.append((src, ax_in, r))
    for j in graph.users(split_idx):
        queue.append((j, ax_in - (unbind and ax_in > d), r))


def _invariant(graph: OpGraph, s: Space, t: int, seen: set) -> bool:
    """Whether tensor t (broadcast over the channels) is the same under every channel permutation:
    built from constants, inputs and reductions over the channels of tensors in the space."""
    if t in seen:
        return True
    seen.add(t)
    op = graph.ops[t]
    if op.kind in ("const", "input"):
        return True
    if t in s.tensors or op.kind in ("linear", "conv", "gconv", "embedding", "param_view"):
        return False
    if op.kind == "reduce" and op.inputs and op.inputs[0] in s.tensors:
        src = op.inputs[0]
        return channel_axis(graph, op, src, *s.tensors[src]) == "invariant"
    if op.kind == "item":
        return _invariant(graph, s, op.inputs[0], seen)
    return bool(op.inputs) and all(_invariant(graph, s, j, seen) for j in op.inputs)
