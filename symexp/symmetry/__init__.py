"""A symmetry is a reparametrisation of a base weight: raw trained factors -> the weight the model uses.

    plain       theta                   (no added symmetry)
    rescaling   theta = u * v           mirror (u, v) -> (-u, -v); symmetric point u = v = 0 -> sparsity
    rotation    W = U V                 (U, V) -> (U R, R^T V); symmetric points are rank-deficient W -> low rank
    dcs         theta = (I - O O^T) w + O (a * b)   mirror (a, b) -> (-a, -b); symmetric point: O^T theta = 0
    penalty     theta, + lam |O^T theta|^2 on the trained loss   (no symmetry: the soft baseline for dcs)

Each symmetry module exposes `factor(base, gen) -> {suffix: raw tensor}` for one member and
`compose(raw) -> theta`, which also works on stacked `[M, ...]` tensors. Breaking the symmetry for
a control is orthogonal to the choice of symmetry (symexp.symmetry.breaking): it shifts the raw
factors by fixed offsets before composing, theta = compose(raw + b).

A symmetry with options (dcs, penalty: the constraint's k, seed) is a module with
`configure(spec) -> object` exposing the same `factor` / `compose`; `get` hands it out configured
from the `symmetry` config dict. An object may also expose `penalty(theta) -> scalar`, which the
engine adds to each member's trained loss (penalty only).
"""
from __future__ import annotations

from types import ModuleType

from symexp.symmetry import dcs, penalty, plain, rescaling, rotation

SYMMETRIES: dict[str, ModuleType] = {"plain": plain, "rescaling": rescaling, "rotation": rotation,
                                     "dcs": dcs, "penalty": penalty}


def get(spec: str | dict):
    """The symmetry `spec` names: a name or a `symmetry` config dict (name + options). Modules with
    options are configured from it (a bare name takes their defaults); the others are the module."""
    spec = {"name": spec} if isinstance(spec, str) else spec
    module = SYMMETRIES[spec["name"]]
    return module.configure(spec) if hasattr(module, "configure") else module
