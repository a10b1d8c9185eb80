"""Audit a model every k steps inside any plain PyTorch training loop.

    hook = AuditHook(model, every=100, example_inputs=x_probe)
    for step, (x, y) in enumerate(loader):
        ...; opt.step()
        hook(step)                  # or: hook.attach(opt), which counts optimizer steps itself
    hook.frame()                    # every audit so far, with a `step` column

The model's structure is traced once (at the first audit); each audit then re-measures its current
weights, plus one forward pass on the example inputs for the units that are never active.
"""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from symexp.audit.core import measure, thresholds
from symexp.audit.discover import Discovery, discover
from symexp.audit.errors import AuditError
from symexp.audit.trace import trace


class AuditHook:
    def __init__(self, model: nn.Module, every: int, example_inputs=None, softmax_output: bool | None = None,
                 **thresholds_):
        if not isinstance(every, int) or every < 1:
            raise AuditError(f"AuditHook: every={every!r}; allowed: an integer >= 1 (audit every k steps)")
        self.model, self.every, self.example_inputs = model, every, example_inputs
        self.softmax_output, self.th = softmax_output, thresholds(**thresholds_)
        self.frames: list[pd.DataFrame] = []
        self.steps = 0
        self._structure: Discovery | None = None

    def __call__(self, step: int) -> pd.DataFrame | None:
        """Audit now if `step` is a multiple of `every`; returns that audit's rows (else None)."""
        if step % self.every:
            return None
        if self._structure is None or self.example_inputs is not None:  # activations change with the weights
            self._structure = discover(trace(self.model, self.example_inputs), self.softmax_output)
        theta = {n: p.detach()[None] for n, p in self.model.named_parameters()}
        df = measure(self._structure, theta, self.th)
        df.insert(0, "step", step)
        self.frames.append(df)
        return df

    def attach(self, optimizer: torch.optim.Optimizer):
        """Audit after every `every`-th optimizer.step(); returns the handle (`.remove()` detaches)."""
        def after_step(opt, args, kwargs):
            self.steps += 1
            self(self.steps)
        return optimizer.register_step_post_hook(after_step)

    def frame(self) -> pd.DataFrame:
        return pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame()
