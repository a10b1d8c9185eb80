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

