"""symexp audit: find the mirror symmetries of any PyTorch model from its structure and measure the
structure they induced (dead, duplicated and rank-deficient units, heads and layers).

    import symexp
    df = symexp.audit(model, example_inputs)     # tidy DataFrame: layer x symmetry x measure
"""
from symexp.audit.core import COLUMNS, audit
from symexp.audit.measures import Thresholds

__all__ = ["COLUMNS", "Thresholds", "audit"]
