"""Base architectures. A model is an nn.Module used as a stateless template: the ensemble engine
passes each member's (effective) parameters through `torch.func.functional_call`.

Each model module holds its config dataclass (a component, symexp.components: `build(data)`), and
the module names its `probes`: the effective weight tensors whose structure is measured, each with
the metric families that apply to it (symexp.metrics).
"""
from __future__ import annotations

import torch
from torch import nn


def init_member(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The base parameters of one member, drawn from the model's own init under `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.reset_parameters()
        return {k: v.detach().clone() for k, v in model.named_parameters()}
