"""Which rows of a projection feed each attention head: replay the traced shape operations on the indices
of the projection's output features (reshape, permute, transpose, split/chunk/unbind, indexing, expand,
repeat_interleave, a KV cache's cat with earlier positions), so that fused q/k/v projections, any head
layout and grouped K/V are read off the run instead of assumed.

Rotary embeddings (symexp.audit.rotary: q * cos + rotate(q) * sin with cos/sin computed from
positions only) pass through: the features keep their indices and the pairs the rotation mixes are recorded.
Any other op (a per-feature gate, a norm over the head dimension) stops the replay: no head is claimed.
"""
from __future__ import annotations

import torch

from symexp.audit import rotary
from symexp.audit.channels import axis_order
from symexp.audit.graph import UNARY, OpGraph

RESHAPE = {"view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze"}


class _Replay:
    def __init__(self, graph: OpGraph, base: int, base_value: torch.Tensor):
        self.graph, self.memo = graph, {base: base_value}
        self.source = base
        self.rotary: torch.Tensor | None = None
        self.scaled: set[int] = set()  # products with a constant that differs between features (cos, sin)

    def value(self, t: int) -> torch.Tensor | None:
        """Feature index of every entry of tensor t (-1: not from the source), or None: not followed."""
        if t not in self.memo:
            self.memo[t] = self._compute(t)
        return self.memo[t]

    def _compute(self, t: int):
        op, g = self.graph.ops[t], self.graph
        shape = op.meta.get("shape")
        if shape is None:
            return None
        if op.kind == "linear":  # the same projection on earlier positions (a KV cache): the same features
            same = op.params.get("weight") == self.graph.ops[self.source].params.get("weight")
            return torch.arange(shape[-1]).expand(shape) if same else None
        if op.kind == "item":
            split = g.ops[op.inputs[0]]
            v = self.value(split.inputs[0]) if split.inputs else None
            if v is None:
                return None
            dim, i = split.meta.get("dim", 0), op.meta["index"]
            if split.name == "split":
                return torch.split(v, split.meta["split_size"], dim)[i]
            if split.name == "chunk":
                return torch.chunk(v, split.meta["chunks"], dim)[i]
            return v.unbind(dim)[i] if split.name == "unbind" else None
        if op.name in ("cat", "stack"):  # a cache's earlier positions; interleaved rotary halves
            parts = [self.value(j) if not constant(g, j) else torch.full(g.ops[j].meta["shape"], -1) for j in op.inputs]
            join = torch.cat if op.name == "cat" else torch.stack
            return None if any(p is None for p in parts) else join(parts, op.meta.get("dim", 0))
        if len(op.inputs) == 2 and op.name in ("add", "mul", "sub"):
            return self._binary(t, op, shape)
        if len(op.inputs) != 1 or op.params:
            return None
        v = self.value(op.inputs[0])
        if v is None:
            return None
        if op.name in RESHAPE:
            return v.reshape(shape)
        if op.name in ("permute", "transpose", "t"):
            order = axis_order(op, v.dim())
            return None if order is None else v.permute(order)
        if op.name == "expand":
            return v.expand(shape)
        if op.name == "getitem":
            index = op.meta.get("arg1")
            try:
                return v[index]
            except (TypeError, IndexError):
                return None
        if op.name == "repeat_interleave":
            return v.repeat_interleave(op.meta.get("repeats"), op.meta.get("dim"))
        if op.kind in ("pass", "scalar") or op.name in UNARY:
            return v
        return None

    def _binary(self, t: int, op, shape):
        a, b = op.inputs
        va = None if constant(self.graph, a) else self.value(a)
        vb = None if constant(self.graph, b) else self.value(b)
        if va is not None and vb is not None:
            if op.name != "add" or va.shape != vb.shape:
                return None
            if torch.equal(va, vb):
                return va
            partner = rotary.pairs(va, vb)
            if partner is None or (self.rotary is not None and not torch.equal(partner, self.rotary)):
                return None
            self.rotary = partner  # q * cos + rotate(q) * sin: the rotary pairs
            self.scaled -= {a, b}  # the rotary's own products with cos and sin
            return va
        v, other = (va, b) if va is not None else (vb, a)
        if v is None or not constant(self.graph, other):
            return None
        other_shape = self.graph.ops[other].meta.get("shape") or ()
        if op.name == "mul" and other_shape and other_shape[-1] != 1:
            self.scaled.add(t)  # allowed only as a term of a rotary embedding (checked by the callers)
        return v.expand(shape) if op.name == "mul" or not other_shape else None


def constant(graph: OpGraph, t: int, seen: set | None = None) -> bool:
    """Whether tensor t is computed from constants and positions only (no parameter, input or map)."""
    seen = set() if seen is None else seen
    if t in seen:
        return True
    seen.add(t)
    op = graph.ops[t]
    if op.kind == "const":
        return True
    if op.kind == "input" or op.params:
        return False
    if not op.inputs:
        return op.kind == "other"  # arange, ones, ...: made from numbers
    return all(constant(graph, j, seen) for j in op.inputs)


def _source(graph: OpGraph, t: int) -> int | None:
    """The projection the tensor's features come from: the first Linear behind it through one-input ops."""
    seen = set()
    stack = [t]
    found = None
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        seen.add(j)
        op = graph.ops[j]
        if op.kind == "linear":  # one projection (applied again to a cache's earlier positions)
            if found is not None and graph.ops[found].params.get("weight") != op.params.get("weight"):
                return None
            found = j if found is None else found
            continue
        stack.extend(i for i in (graph.ops[op.inputs[0]].inputs if op.kind == "item" else op.inputs)
                     if not constant(graph, i))
    return found


def rows(graph: OpGraph, t: int):
    """(projection op, its rows per head ``[H, d_head]``, rotary partner ``[d_head]`` or None) for a head
    tensor ``[B, H, T, d_head]``, or None."""
    shape = graph.ops[t].meta.get("shape")
    src = _source(graph, t)
    if src is None or not shape or len(shape) != 4:
        return None
    out_shape = graph.ops[src].meta["shape"]
    r = _Replay(graph, src, torch.arange(out_shape[-1]).expand(out_shape))
    v = r.value(t)
    if v is None or r.scaled:
        return None
    per_head = v[0, :, -1, :]
    ok = (per_head >= 0).all() and ((v == per_head[None, :, None, :]) | (v < 0)).all()
    return (src, per_head.clone(), r.rotary) if ok else None


def cols(graph: OpGraph, t: int):
    """(output projection op, its input columns per head ``[H, d_head]``) for the attention output t
    ``[B, H, T, d_head]`` read by one Linear after shape operations, or None."""
    shape = graph.ops[t].meta.get("shape")
    if not shape or len(shape) != 4:
        return None
    H, dh = shape[1], shape[3]
    base = torch.arange(H * dh).view(1, H, 1, dh).expand(shape)
    path, cur = [], t
    while len(graph.users(cur)) == 1:
        nxt = graph.users(cur)[0]
        if graph.ops[nxt].kind == "linear":
            break
        path.append(nxt)
        cur = nxt
    else:
        return None
    lin = graph.users(cur)[0]
    if graph.ops[lin].inputs[:1] != [cur]:
        return None
    r = _Replay(graph, t, base)
    v = r.value(cur)
    if v is None or r.rotary is not None or r.scaled:
        return None
    feats = v.reshape(-1, v.shape[-1])
    if not (feats == feats[:1]).all() or sorted(feats[0].tolist()) != list(range(H * dh)):
        return None
    return lin, torch.argsort(feats[0]).view(H, dh)


def untransposed(graph: OpGraph, t: int) -> int | None:
    """k for k^T (q @ k.transpose(-2, -1)), None when t is not a transpose of the last two dims."""
    op = graph.ops[t]
    shape = op.meta.get("shape")
    if op.name not in ("transpose", "permute") or not shape:
        return None
    order = axis_order(op, len(shape))
    n = len(shape)
    return op.inputs[0] if order == [*range(n - 2), n - 1, n - 2] else None
