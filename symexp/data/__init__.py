"""Data sets as tensors resident on the training device (no DataLoader in the loop).

A data set is a component (symexp.registry): a dataclass config with `build(device, dtype) ->
TensorData`. What models and references need from it are named fields, never an untyped dict.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Augment:
    """Per-member random crop after `pad` reflect padding, and horizontal flip (images, minibatches)."""

    pad: int
    flip: bool


@dataclass
class Truth:
    """What closed-form references (symexp.theory) read: float64 copies of the sample and the teacher."""

    x64: torch.Tensor  # [n, d] inputs as trained on, float64, on the CPU
    y64: torch.Tensor  # [n, ...] targets as trained on
    teacher: torch.Tensor | None = None  # the generating weight (vector or matrix)
    teacher_sv: torch.Tensor | None = None  # its singular values (matrix teachers)
    target: torch.Tensor | None = None  # the least-squares map of the sample (lowrank_map)
    target_sv: torch.Tensor | None = None  # its singular values, descending
    gamma_star: float | None = None  # |E[x y]|: the critical weight decay of a dead tanh net


@dataclass
class TensorData:
    """One data set on one device. `task` picks the loss: regression -> MSE, classification -> CE,
    language -> next-token CE over every position."""

    x: torch.Tensor  # [n, ...] training inputs
    y: torch.Tensor  # [n] targets (float for regression, int64 class ids for classification)
    task: str
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    # loss/train is measured on these when set: a fixed sample of a training set too large to evaluate
    x_eval: torch.Tensor | None = None
    y_eval: torch.Tensor | None = None
    truth: Truth | None = None  # synthetic data: what the references compare against
    classes: tuple[str, ...] = ()  # classification: class names, in label order
    vocab: tuple[str, ...] = ()  # language: the characters, in token order
    augment: Augment | None = None  # images: per-member crop and flip of each minibatch
    source: str = ""  # provenance: data set name, file or corpus (+ hash) for the report

    @property
    def n(self) -> int:
        return self.x.shape[0]
