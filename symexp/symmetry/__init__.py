"""A symmetry is a reparametrisation of a base weight: raw trained factors -> the weight the model uses.

    plain       theta                   (no added symmetry)
    rescaling   theta = u * v           mirror (u, v) -> (-u, -v); symmetric point u = v = 0 -> sparsity

Each symmetry module exposes `factor(base, gen) -> {suffix: raw tensor}` for one member and
`compose(raw) -> theta`, which also works on stacked `[M, ...]` tensors. Breaking the symmetry for
a control is orthogonal to the choice of symmetry (symexp.symmetry.breaking): it shifts the raw
factors by fixed offsets before composing, theta = compose(raw + b).
"""
from __future__ import annotations

from types import ModuleType

from symexp.symmetry import plain, rescaling

SYMMETRIES: dict[str, ModuleType] = {"plain": plain, "rescaling": rescaling}


def get(name: str) -> ModuleType:
    return SYMMETRIES[name]
