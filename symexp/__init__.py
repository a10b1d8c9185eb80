"""symexp: loss-function symmetries create structure (Ziyin, ICML 2024), measured and swept."""


def __getattr__(name: str):
    # `symexp.audit(model)` without importing torch/pandas at `import symexp`
    if name == "audit":
        import importlib

        return importlib.import_module("symexp.audit")
    raise AttributeError(f"module 'symexp' has no attribute {name!r}")
