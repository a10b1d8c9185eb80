"""Attention heads in an OpGraph: nn.MultiheadAttention (packed `in_proj_weight` or separate q/k/v
weights), F.scaled_dot_product_attention, and attention written out (q @ k^T -> softmax -> @ v).

Each head h has the double rotation (W_Q,h, W_K,h) -> (R W_Q,h, R W_K,h) and (W_V,h, W_O,h) ->
(R W_V,h, W_O,h R^T); its invariants are W_Q,h^T W_K,h and W_O,h W_V,h (paper.md 3). Heads are assumed
laid out the standard way: head h owns rows [h d_head, (h+1) d_head) of W_Q, W_K, W_V (within their
slice of a packed projection) and the same columns of W_O.
"""
from __future__ import annotations

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
        note = "" if spec.pop("heads_known") else "head count unknown (no shapes, no head attribute): one head assumed"
        out.append(Finding("double_rotation", label, ops, params, spec, note))
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
    k_bias = (p["in_proj_bias"], k[1], k[2]) if "in_proj_bias" in p else None
    biases = [p["in_proj_bias"]] if "in_proj_bias" in p else []  # rotated with their rows of W_Q, W_K, W_V
    return {"q": q, "k": k, "v": v, "o": o, "heads": heads, "heads_known": True, "k_bias": k_bias,
            "biases": biases}, {i}


def _from_sdpa(graph: OpGraph, i: int):
    op = graph.ops[i]
    if len(op.inputs) < 3:
        return None
    q, k, v = (_source(graph, j) for j in op.inputs[:3])
    return _assemble(graph, q, k, v, _sink(graph, i), graph.ops[op.inputs[0]])


def _from_softmax(graph: OpGraph, i: int):
    """scores = (q @ k^T) [* scale, masked] -> softmax -> (@ v) -> ... -> W_O."""
    scores = _back(graph, graph.ops[i].inputs[0], ("scalar", "mask", "pass", "add"))
    if scores is None or graph.ops[scores].kind != "matmul" or len(graph.ops[scores].inputs) != 2:
        return None
    a, b = graph.ops[scores].inputs
    weights = _forward(graph, i, ("pass",))
    if weights is None or graph.ops[weights].kind != "matmul" or graph.ops[weights].inputs[:1] != [_last_pass(graph, i)]:
        return None
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
    spec = {"q": _named(graph, q), "k": _named(graph, k), "v": _named(graph, v), "o": (o_op.params["weight"], 0, o_cols),
            "heads": heads, "heads_known": known, "k_bias": k_bias, "biases": biases}
    return spec, {q[0], k[0], v[0], o}


def _named(graph: OpGraph, src: tuple) -> tuple:
    return graph.ops[src[0]].params["weight"], src[1], src[2]


def _heads(graph: OpGraph, q: tuple, q_tensor: Op) -> tuple[int, bool]:
    rows = q[2] - q[1]
    shape = q_tensor.meta.get("shape")
    if shape and len(shape) >= 3 and rows % shape[-1] == 0:
        return rows // shape[-1], True
    path = graph.ops[q[0]].params["weight"]
    while "." in path:
        path = path.rsplit(".", 1)[0]
        if path in graph.head_counts and rows % graph.head_counts[path] == 0:
            return graph.head_counts[path], True
    return 1, False


def _back(graph: OpGraph, idx: int, through: tuple) -> int | None:
    while graph.ops[idx].kind in through and graph.ops[idx].inputs:
        idx = graph.ops[idx].inputs[0]
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
