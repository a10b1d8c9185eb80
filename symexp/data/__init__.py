"""Data sets as tensors resident on the training device (no DataLoader in the loop)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class TensorData:
    """One data set on one device. `task` picks the loss: regression -> MSE, classification -> CE,
    language -> next-token CE over every position."""

    x: torch.Tensor  # [n, ...] training inputs
    y: torch.Tensor  # [n] targets (float for regression, int64 class ids for classification)
    task: str
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)  # e.g. the teacher, for references
    # loss/train is measured on these when set: a fixed sample of a training set too large to evaluate
    x_eval: torch.Tensor | None = None
    y_eval: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return self.x.shape[0]


def build_data(cfg: dict, device: torch.device, dtype: torch.dtype) -> TensorData:
    """Build the data set named by `cfg["name"]` (schemas in symexp.config.DATA_SCHEMAS)."""
    from symexp.data import images, synthetic, tanh_teacher, text

    builders = {"regression": synthetic.regression, "lowrank_map": synthetic.lowrank_map,
                "fashion_mnist": images.image_data, "cifar10": images.image_data, "text": text.text,
                "tanh_teacher": tanh_teacher.tanh_teacher}
    return builders[cfg["name"]](cfg, device, dtype)
