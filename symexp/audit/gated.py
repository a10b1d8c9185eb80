"""Gated MLPs (SwiGLU, GeGLU: down(act(gate(x)) * up(x))): the product is linear in each operand that is a
map's output with no nonlinearity, so that map's unit i and the reader's column i trade any factor rho != 0
(up_i -> rho up_i, down[:, i] -> down[:, i] / rho): a rescaling, the sign mirror included. The gate is not
homogeneous (silu(rho z) != rho silu(z)), so it has none; the units' permutation (gate, up and down
together) is a channel space (symexp.audit.channels)."""
from __future__ import annotations

from symexp.audit.graph import Finding, OpGraph


def find_gated(graph: OpGraph) -> list[Finding]:
    out = []
    for i, op in enumerate(graph.ops):
        if op.name != "mul" or len(op.inputs) != 2 or op.params or op.inputs[0] == op.inputs[1]:
            continue
        readers = _readers(graph, i)
        if not readers:
            continue
        for j, other in zip(op.inputs, reversed(op.inputs)):
            src = _map_behind(graph, j)
            if src is None or graph.ops[other].meta.get("shape") != op.meta.get("shape"):
                continue
            w = graph.ops[src].params["weight"]
            h = graph.param_shapes[w][0]
            rows = [w] + ([graph.ops[src].params["bias"]] if "bias" in graph.ops[src].params else [])
            outs = [graph.ops[r].params["weight"] for r in readers]
            spec = {"h": h, "in": rows, "out": outs, "act": None, "conv": False}
            out.append(Finding("rescaling", graph.ops[src].label, {src, i, *readers}, tuple(sorted({*rows, *outs})),
                               spec, "gated: the product is linear in this map's units; any rho != 0, "
                               "the sign mirror included"))
    return out


def _map_behind(graph: OpGraph, idx: int) -> int | None:
    """The Linear whose output reaches `idx` through pass-through ops only, used by nothing else."""
    while graph.ops[idx].kind == "pass" and graph.ops[idx].inputs:
        idx = graph.ops[idx].inputs[0]
    op = graph.ops[idx]
    return idx if op.kind == "linear" and len(graph.users(idx)) == 1 else None


def _readers(graph: OpGraph, idx: int) -> list[int]:
    while len(graph.users(idx)) == 1 and graph.ops[graph.users(idx)[0]].kind == "pass":
        idx = graph.users(idx)[0]
    users = graph.users(idx)
    ok = users and idx not in graph.outputs and all(
        graph.ops[u].kind == "linear" and graph.ops[u].inputs[:1] == [idx] for u in users)
    return list(users) if ok else []
