"""A symmetry is a reparametrisation of a base weight: raw trained factors -> the weight the model uses.

    plain       theta                   (no added symmetry)
    rescaling   theta = u * v           mirror (u, v) -> (-u, -v); symmetric point u = v = 0 -> sparsity
    rotation    W = U V                 (U, V) -> (U R, R^T V); symmetric points are rank-deficient W -> low rank
    dcs         theta = (I - O O^T) w + O (a * b)   mirror (a, b) -> (-a, -b); symmetric point: O^T theta = 0
    penalty     theta, + lam |O^T theta|^2 on the trained loss   (no symmetry: the soft baseline for dcs)

Each is a dataclass component (symexp.components) named by `_target_` in configs/symmetry/<name>.yaml,
with `factor(base, gen) -> {suffix: raw tensor}` for one member and `compose(raw) -> theta`, which
also works on stacked `[M, ...]` tensors. `structure` names the metric families its structure shows
in; `penalty(theta) -> scalar`, when present, is added to each member's trained loss (penalty only).
Breaking the symmetry for a control is orthogonal (symexp.symmetry.breaking): theta = compose(raw + b).
"""
