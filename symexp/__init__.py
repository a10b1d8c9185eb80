"""symexp: loss-function symmetries create structure (Ziyin, ICML 2024), measured and swept."""
