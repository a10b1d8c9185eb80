"""symexp audit: find the mirror symmetries of any PyTorch model from its structure and measure the
structure they induced (dead, duplicated and low-rank units, heads and layers), by symmetry.

    import symexp
    df = symexp.audit(model, example_inputs)     # tidy DataFrame: member x layer x symmetry x measure
    df = symexp.audit(model, example_inputs, verify=True)   # + each finding checked on a copy of the model
    df = symexp.audit.audit_job("results/runs/quick/fig1_right/<job>")   # every member of a job
    hook = symexp.audit.AuditHook(model, every=100)                     # inside a training loop

symexp.audit.zoo holds plain-torch reference architectures (GPT-2, Llama, ViT, BERT, ResNet, MobileNet,
ConvNeXt) the audit is tested on. The package itself is callable (symexp.audit(...) is symexp.audit.audit(...)), so the same name works
whether or not the subpackage has been imported.
"""
import sys
import types

from symexp.audit.core import COLUMNS, audit
from symexp.audit.hook import AuditHook
from symexp.audit.jobs import audit_job
from symexp.audit.measures import Thresholds
from symexp.audit.report import write_report

__all__ = ["COLUMNS", "AuditHook", "Thresholds", "audit", "audit_job", "write_report"]


class _CallableModule(types.ModuleType):
    def __call__(self, model, example_inputs=None, **kwargs):
        return audit(model, example_inputs, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
