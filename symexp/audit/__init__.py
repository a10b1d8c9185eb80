"""symexp audit: find the mirror symmetries of any PyTorch model from its structure and measure the
structure they induced (dead, duplicated and low-rank units, heads and layers), by symmetry.

    import symexp
    df = symexp.audit(model, example_inputs)     # tidy DataFrame: member x layer x symmetry x measure
    df = symexp.audit(model, example_inputs, verify=True)   # + each finding checked on a copy of the model
    df = symexp.audit.audit_job("results/runs/quick/fig1_right/<job>")   # every member of a job
    hook = symexp.audit.AuditHook(model, every=100)                     # inside a training loop

symexp.audit.zoo holds plain-torch reference architectures (GPT-2, Llama, ViT, BERT, ResNet, MobileNet,
ConvNeXt) the audit is tested on. The package itself is callable (symexp.audit(...) is symexp.audit.audit(...)),
so the same name works whether or not the subpackage has been imported. Its names are imported on first use,
so the CLI (symexp.audit.cli) answers a bad argument without importing torch.
"""
import importlib
import sys
import types

EXPORTS = {"COLUMNS": "core", "audit": "core", "AuditHook": "hook", "audit_job": "jobs", "Thresholds": "measures",
           "write_report": "report"}
__all__ = list(EXPORTS)


def __getattr__(name: str):
    if name in EXPORTS:
        return getattr(importlib.import_module(f"symexp.audit.{EXPORTS[name]}"), name)
    raise AttributeError(f"module 'symexp.audit' has no attribute {name!r}")


class _CallableModule(types.ModuleType):
    def __call__(self, model, example_inputs=None, **kwargs):
        from symexp.audit.core import audit

        return audit(model, example_inputs, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
