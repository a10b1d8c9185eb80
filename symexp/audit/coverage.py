"""No silent coverage: each parameter has roles (a map's weight: its output rows and its input columns; an
embedding table: its channels; a per-channel vector: its entries), and a finding explains only the roles it
acts on. A parameter is covered when every role is explained; a role no finding explains is listed with
the reason, even when another finding acts on the same tensor (q, k, v, gate and up are moved by the
preceding norm's gain rescaling only on their input columns)."""
from __future__ import annotations

import math

from symexp.audit.graph import Finding, OpGraph

MAP_ROLES = {0: "output rows", 1: "input columns"}


def roles(graph: OpGraph, p: str) -> dict[int, str]:
    """axis -> role name of parameter p, from its first use (the layout every finding's spec uses)."""
    shape = graph.param_shapes[p]
    users = sorted(graph.param_users.get(p, ()))
    if not shape:
        return {0: "value"}
    if not users:
        return {0: "entries"}
    op = graph.ops[users[0]]
    role = next(r for r, q in op.params.items() if q == p)
    if ((op.kind in ("linear", "conv") and role == "weight" or op.kind == "mha" and role.endswith("weight"))
            and len(shape) >= 2):
        return dict(MAP_ROLES)
    if op.kind == "embedding":
        return {len(shape) - 1: "channels"}
    if op.kind == "gconv" or len(shape) == 1:
        return {0: "channels" if op.kind == "gconv" else "entries"}
    big = [k for k, n in enumerate(shape) if n > 1]
    return {big[-1] if big else len(shape) - 1: "channels"}


def explained(findings: list[Finding]) -> dict[str, set[int]]:
    """parameter -> the axes the findings act on."""
    out: dict[str, set[int]] = {}
    add = lambda p, axis: out.setdefault(p, set()).add(axis)  # noqa: E731
    for f in findings:
        s = f.spec
        if f.symmetry == "permutation":
            for p, axis in s["parts"]:
                add(p, axis)
        elif f.symmetry in ("rescaling", "sign"):
            for p in s["in"]:
                add(p, 0)
            for p in s["out"]:
                add(p, 1)
        elif f.symmetry == "rotation":
            for p in (s["w_in"], *s["rows"]):
                add(p, 0)
            for p in s["out"]:
                add(p, 1)
        elif f.symmetry == "double_rotation":
            for r in "qkv":
                add(s[r][0], 0)
            add(s["o"][0], 1)
            for p in set(f.params) - {s[r][0] for r in "qkvo"}:  # q, k, v biases: rotated with their rows
                add(p, 0)
        elif f.symmetry in ("scale", "translation"):
            for p in f.params:
                add(p, 0)
    return out


def unanalysed(graph: OpGraph, findings: list[Finding], why) -> tuple[dict[str, str], dict[str, str], float]:
    """(unclassified: parameters with no role explained -> reason, partial: parameters with some roles
    unexplained -> which and why, covered fraction of parameter values). why(p, axis) gives a reason."""
    done = explained(findings)
    unclassified, partial, covered, total = {}, {}, 0, 0
    for p, shape in graph.param_shapes.items():
        n = math.prod(shape)
        total += n
        need = roles(graph, p)
        missing = {a: r for a, r in need.items() if a not in done.get(p, set())}
        if not missing:
            covered += n
        elif len(missing) == len(need):
            unclassified[p] = why(p, next(iter(missing)))
        else:
            partial[p] = "; ".join(f"{r} unanalysed: {why(p, a)}" for a, r in missing.items())
    return unclassified, partial, covered / total if total else 1.0
