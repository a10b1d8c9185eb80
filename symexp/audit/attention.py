"""Attention heads in an OpGraph: nn.MultiheadAttention (packed `in_proj_weight` or separate q/k/v
weights), F.scaled_dot_product_attention, and attention written out (q @ k^T -> softmax -> @ v).

Each head h has the double rotation (W_Q,h, W_K,h) -> (R W_Q,h, R W_K,h) and (W_V,h, W_O,h) ->
(R W_V,h, W_O,h R^T); its invariants are W_Q,h^T W_K,h and W_O,h W_V,h (paper.md 3).
Which rows of which weight feed each head is read off the traced run by replaying its shape operations
(reshape, permute, split, chunk, unbind, indexing, a KV cache's cat, repeat_kv's expand) on the output
features' indices, so fused projections (c_attn, qkv) and grouped K/V need no layout assumption:
* grouped K/V: query heads h of KV group g read the same W_K,g, W_V,g, so one rotation per group acts on
  W_K,g and every W_Q,h of the group (and on W_V,g and every W_O,h): the invariants are still
  W_Q,h^T W_K,g and W_O,h W_V,g per query head, the directions switched off are the group's;
* rotary embeddings (symexp.audit.rotary): W_Q,h^T W_K,h is no longer invariant; only rotations
  commuting with the rotary 2x2 frequency blocks remain (per block a rotation and a rescaling), so QK
  structure is whole frequency blocks switched off; W_O,h W_V,g is unaffected.
Without shapes (torch.fx), heads are assumed laid out the standard way: head h owns rows
[h d_head, (h+1) d_head) of W_Q, W_K, W_V (within their slice of a packed projection) and those columns of W_O.
"""
from __future__ import annotations

import torch

from symexp.audit import replay
from symexp.audit.graph import Finding, Op, OpGraph

HEAD_ATTRS = ("num_heads", "n_head", "n_heads", "nhead", "num_attention_heads", "heads")


def find_attention(graph: OpGraph) -> list[Finding]:
    out = []
    for i, op in enumerate(graph.ops):
        found = {"mha": _from_mha, "sdpa": _from_sdpa, "softmax": _from_softmax}.get(op.kind, lambda *a: None)(graph, i)
        if found is None:
            continue
        spec, ops = found
        params = tuple(sorted({spec[r][0] for r in "qkvo"} | set(spec.pop("biases"))))
        label = _common_module(spec["q"][0], spec["o"][0])
        notes = ["" if spec.pop("heads_known")
                 else "head count unknown (no shapes, no head attribute): one head assumed"]
        spec["groups"] = _groups(spec["k"][1], spec["v"][1])
        if spec["groups"] is None:
            continue
        H, G = spec["k"][1].shape[0], len(spec["groups"])
        if G < H:
            notes.append(f"grouped K/V: {H} query heads share {G} K/V heads; "
                         "a group's rotation is shared by its query heads")
        if spec.get("rotary") is not None:
            notes.append("rotary: only rotations commuting with the 2x2 frequency blocks remain for QK "
                         "(a rotation and a rescaling per block); W_Q^T W_K is not invariant")
        out.append(Finding("double_rotation", label, ops, params, spec, "; ".join(filter(None, notes))))
    return out


def _common_module(a: str, b: str) -> str:
    pa, pb = a.split(".")[:-1], b.split(".")[:-1]
    common = []
    for x, y in zip(pa, pb):
        if x != y:
            break
        common.append(x)
    return ".".join(common) or a.rsplit(".", 1)[0]


def _from_mha(graph: OpGraph, i: int):
    op = graph.ops[i]
    p, heads = op.params, op.meta.get("num_heads")
    if "out_proj_weight" not in p or not isinstance(heads, int):
        return None
    if "in_proj_weight" in p:
        e = graph.param_shapes[p["in_proj_weight"]][0] // 3
        q, k, v = ((p["in_proj_weight"], j * e, (j + 1) * e) for j in range(3))
    elif all(f"{r}_proj_weight" in p for r in "qkv"):
        q, k, v = ((p[f"{r}_proj_weight"], 0, graph.param_shapes[p[f"{r}_proj_weight"]][0]) for r in "qkv")
    else:
        return None
    o = (p["out_proj_weight"], 0, graph.param_shapes[p["out_proj_weight"]][1])
    q, k, v, o = (_ranged(t, heads) for t in (q, k, v, o))
    k_bias = (p["in_proj_bias"], k[1]) if "in_proj_bias" in p else None
    biases = [p["in_proj_bias"]] if "in_proj_bias" in p else []  # rotated with their rows of W_Q, W_K, W_V
    return {"q": q, "k": k, "v": v, "o": o, "heads": heads, "heads_known": True, "k_bias": k_bias,
            "biases": biases, "rotary": None}, {i}


def _ranged(src: tuple, heads: int) -> tuple:
    """(weight, first, end) -> (weight, its rows per head [heads, d_head]): the standard layout."""
    name, start, stop = src
    return name, torch.arange(start, stop).view(heads, -1)


def _groups(k_rows: torch.Tensor, v_rows: torch.Tensor) -> list[list[int]] | None:
    """Query heads grouped by the K/V rows they read (one group per head without grouped K/V); None when
    K and V are grouped differently (not a layout the audit claims anything about)."""
    groups: dict[tuple, list[int]] = {}
    for h in range(k_rows.shape[0]):
        groups.setdefault((tuple(k_rows[h].tolist()), tuple(v_rows[h].tolist())), []).append(h)
    k_groups = {k for k, _ in groups}  # the distinct K rows alone
    if len(k_groups) != len(groups) or len({len(g) for g in groups.values()}) != 1:
        return None
    return list(groups.values())


def _from_sdpa(graph: OpGraph, i: int):
    op = graph.ops[i]
    if len(op.inputs) < 3:
        return None
    if "shape" in op.meta:
        return _replayed(graph, *op.inputs[:3], i)
    q, k, v = (_source(graph, j) for j in op.inputs[:3])
    return _assemble(graph, q, k, v, _sink(graph, i), graph.ops[op.inputs[0]])


def _replayed(graph: OpGraph, q: int, k: int, v: int, out: int):
    """Heads from a traced run: each of q, k, v ``[B, H, T, d_head]`` replayed back to its projection's rows."""
    srcs = [replay.rows(graph, j) for j in (q, k, v)]
    sink = replay.cols(graph, out)
    if None in srcs or sink is None:
        return None
    (qi, q_rows, q_rot), (ki, k_rows, k_rot), (vi, v_rows, v_rot) = srcs
    oi, o_cols = sink
    if graph.ops[out].meta.get("enable_gqa") and k_rows.shape[0] < q_rows.shape[0] == v_rows.shape[0] * (
            q_rows.shape[0] // v_rows.shape[0]):  # SDPA repeats each K/V head for its group of query heads
        r = q_rows.shape[0] // k_rows.shape[0]
        k_rows, v_rows = k_rows.repeat_interleave(r, 0), v_rows.repeat_interleave(r, 0)
    if v_rot is not None or (q_rot is None) != (k_rot is None) or (q_rot is not None and not torch.equal(q_rot, k_rot)):
        return None
    if q_rot is not None and len(q_rot) != q_rows.shape[1]:
        return None  # partial rotary (part of the head dimension rotated): not claimed
    if not (q_rows.shape == k_rows.shape and v_rows.shape[0] == q_rows.shape[0] and o_cols.shape == v_rows.shape):
        return None
    named = lambda j, rows: (graph.ops[j].params["weight"], rows)  # noqa: E731
    k_op = graph.ops[ki]
    biases = [graph.ops[j].params["bias"] for j in (qi, ki, vi) if "bias" in graph.ops[j].params]
    spec = {"q": named(qi, q_rows), "k": named(ki, k_rows), "v": named(vi, v_rows),
            "o": (graph.ops[oi].params["weight"], o_cols), "heads": q_rows.shape[0], "heads_known": True,
            "k_bias": (k_op.params["bias"], k_rows) if "bias" in k_op.params and q_rot is None else None,
            "biases": sorted(set(biases)), "rotary": q_rot}
    return spec, {qi, ki, vi, oi}


def _from_softmax(graph: OpGraph, i: int):
    """scores = (q @ k^T) [* scale, masked] -> softmax -> (@ v) -> ... -> W_O."""
    scores = _back(graph, graph.ops[i].inputs[0], ("scalar", "mask", "pass", "add"))
    if scores is None or graph.ops[scores].kind != "matmul" or len(graph.ops[scores].inputs) != 2:
        return None
    a, b = graph.ops[scores].inputs
    weights = _forward(graph, i, ("pass",))
    if weights is None or graph.ops[weights].kind != "matmul" or graph.ops[weights].inputs[:1] != [_last_pass(graph, i)]:
        return None
    if "shape" in graph.ops[weights].meta:
        k_t = replay.untransposed(graph, b)
        return None if k_t is None else _replayed(graph, a, k_t, graph.ops[weights].inputs[1], weights)
    v = _source(graph, graph.ops[weights].inputs[1])
    return _assemble(graph, _source(graph, a), _source(graph, b), v, _sink(graph, weights), graph.ops[a])


def _assemble(graph: OpGraph, q, k, v, o, q_tensor: Op):
    if None in (q, k, v, o) or q[2] - q[1] != k[2] - k[1]:
        return None
    o_op = graph.ops[o]
    o_cols = graph.param_shapes[o_op.params["weight"]][1]
    if o_cols != v[2] - v[1]:
        return None
    heads, known = _heads(graph, q, q_tensor)
    k_op = graph.ops[k[0]]
    k_bias = (k_op.params["bias"], k[1], k[2]) if "bias" in k_op.params else None
    biases = [graph.ops[s[0]].params["bias"] for s in (q, k, v) if "bias" in graph.ops[s[0]].params]
    spec = {r: _ranged(t, heads) for r, t in zip("qkvo", (_named(graph, q), _named(graph, k), _named(graph, v),
                                                          (o_op.params["weight"], 0, o_cols)))}
    k_bias = (k_bias[0], spec["k"][1]) if k_bias else None
    spec.update(heads=heads, heads_known=known, k_bias=k_bias, biases=biases, rotary=None)
    return spec, {q[0], k[0], v[0], o}


def _named(graph: OpGraph, src: tuple) -> tuple:
    return graph.ops[src[0]].params["weight"], src[1], src[2]


def _heads(graph: OpGraph, q: tuple, q_tensor: Op) -> tuple[int, bool]:
    rows = q[2] - q[1]
    shape = q_tensor.meta.get("shape")
    if shape and len(shape) >= 3 and rows % shape[-1] == 0:
        return rows // shape[-1], True
    path = graph.ops[q[0]].params["weight"]
    while path:
        path = path.rsplit(".", 1)[0] if "." in path else ""  # up to the model itself ("")
        if path in graph.head_counts and rows % graph.head_counts[path] == 0:
            return graph.head_counts[path], True
    return 1, False


def _back(graph: OpGraph, idx: int, through: tuple) -> int | None:
    while True:
        op = graph.ops[idx]
        if op.name == "where":  # transformers' eager causal mask: where(mask, scores, min)
            varying = [j for j in op.inputs if not replay.constant(graph, j)]
            if len(varying) != 1:
                return idx
            idx = varying[0]
        elif op.kind in through and op.inputs:
            idx = op.inputs[0]
        else:
            return idx


def _forward(graph: OpGraph, idx: int, through: tuple) -> int | None:
    while len(graph.users(idx)) == 1:
        idx = graph.users(idx)[0]
        if graph.ops[idx].kind not in through:
            return idx
    return None


def _last_pass(graph: OpGraph, idx: int) -> int:
    while len(graph.users(idx)) == 1 and graph.ops[graph.users(idx)[0]].kind == "pass":
        idx = graph.users(idx)[0]
    return idx


def _source(graph: OpGraph, idx: int):
    """(linear op, first row, end row) that tensor `idx` is a reshaped slice of, or None."""
    pending = None  # (split op, item index) to resolve against the linear's output width
    while True:
        op = graph.ops[idx]
        if op.kind == "linear":
            rows = graph.param_shapes[op.params["weight"]][0]
            return (idx, 0, rows) if pending is None else _resolve(pending, idx, rows)
        if op.kind == "item" and graph.ops[op.inputs[0]].name in ("split", "chunk") and pending is None:
            split = graph.ops[op.inputs[0]]
            if not _splits_last_dim(graph, split):
                return None
            pending = (split, op.meta["index"])
            idx = split.inputs[0]
        elif op.kind in ("shape", "pass", "scalar") and op.name != "getitem" and len(op.inputs) == 1:
            idx = op.inputs[0]
        else:
            return None


def _splits_last_dim(graph: OpGraph, split: Op) -> bool:
    dim = split.meta.get("dim", 0)
    shape = graph.ops[split.inputs[0]].meta.get("shape")
    return dim == -1 or (dim == len(shape) - 1 if shape else dim >= 1)


def _resolve(pending: tuple, idx: int, rows: int):
    split, index = pending
    if split.name == "chunk":
        n = split.meta.get("chunks")
        size = -(-rows // n)
        sizes = [min(size, rows - j * size) for j in range(n)]
    else:
        s = split.meta.get("split_size")
        sizes = list(s) if isinstance(s, (list, tuple)) else [min(s, rows - j * s) for j in range(-(-rows // s))]
    start = sum(sizes[:index])
    return idx, start, start + sizes[index]


def _sink(graph: OpGraph, idx: int) -> int | None:
    """The linear map that reads tensor `idx` after reshapes only (the head-merging output projection)."""
    while len(graph.users(idx)) == 1:
        nxt = graph.users(idx)[0]
        op = graph.ops[nxt]
        if op.kind == "linear" and op.inputs[:1] == [idx]:
            return nxt
        if op.kind not in ("shape", "pass") or op.name == "getitem":
            return None
        idx = nxt
    return None
