"""Metrics of symmetry-induced structure, batched over an ensemble axis M (input ``[M, ...]`` -> ``[M]``)."""
from .homogeneity import (
    dead_fraction,
    feature_correlation,
    independent_units,
    near_identical_pairs,
    unit_vectors,
)
from .rank import (
    as_matrix,
    energy_rank,
    erank,
    normalised_spectrum,
    singular_values,
    stable_rank,
    tau_rank,
)
from .sparsity import frac_zero, l1_l2_ratio

__all__ = [
    "frac_zero",
    "l1_l2_ratio",
    "as_matrix",
    "singular_values",
    "tau_rank",
    "erank",
    "stable_rank",
    "energy_rank",
    "normalised_spectrum",
    "unit_vectors",
    "dead_fraction",
    "independent_units",
    "feature_correlation",
    "near_identical_pairs",
]
