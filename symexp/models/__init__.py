"""Base architectures. A model is an nn.Module used as a stateless template: the ensemble engine
passes each member's (effective) parameters through `torch.func.functional_call`.

Every model also names its `probes`: the effective weight tensors whose structure is measured,
each with the metric families that apply to it (symexp.metrics).
"""
from __future__ import annotations

import torch
from torch import nn

from symexp.data import TensorData


def build_model(cfg: dict, data: TensorData) -> nn.Module:
    """The base module for `cfg["name"]` (schemas in symexp.config.MODEL_SCHEMAS), sized from data."""
    from symexp.models.linear import Linear
    from symexp.models.matrix import Matrix
    from symexp.models.mlp import MLP
    from symexp.models.resnet import ResNet18
    from symexp.models.tanh_net import TanhNet
    from symexp.models.transformer import Transformer

    n_classes = len(data.extras.get("classes", ()))  # image data sets name their classes
    builders = {"linear": lambda: Linear(data.x.shape[1], cfg["init_scale"]),
                "matrix": lambda: Matrix(data.x.shape[1], data.y.shape[1], cfg["init_scale"]),
                "mlp": lambda: MLP(data.x[0].numel(), cfg["widths"], n_classes, cfg["activation"]),
                "resnet18": lambda: ResNet18(data.x.shape[1], n_classes, cfg["width"], cfg["bf16"]),
                "transformer": lambda: Transformer(len(data.extras["vocab"]), data.x.shape[1], cfg["n_layer"],
                                                   cfg["n_head"], cfg["d_model"], cfg["init_scale"]),
                "tanh_net": lambda: TanhNet(data.x.shape[1], cfg["width"], cfg["init_scale"], cfg["dead_units"],
                                            cfg["twin_pairs"], (data.x, data.y) if cfg["probe_hessian"] else None)}
    return builders[cfg["name"]]()


def init_member(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The base parameters of one member, drawn from the model's own init under `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.reset_parameters()
        return {k: v.detach().clone() for k, v in model.named_parameters()}
