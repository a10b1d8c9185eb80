"""The conventional CIFAR ResNet18 (kuangliu/pytorch-cifar, anchors A7): 3x3 stem, no max-pool,
4 stages x 2 BasicBlocks, widths 64-128-256-512 (times `width`), BatchNorm, global average pool, fc.
11,173,962 parameters for 3x32x32 inputs and 10 classes at width 1.

Permutation symmetry used for measurement: the hidden channel of each BasicBlock (conv1 -> bn1 ->
relu -> conv2). Channel i of block b is the unit v_i = [conv1.weight[i], bn1.weight[i], bn1.bias[i],
conv2.weight[:, i]]; swapping two such units leaves the function unchanged (paper.md 3). The
residual-stream channels are permuted only jointly across a stage, so they are not probed.

`bf16` (auto: on CUDA only) runs the forward under bf16 autocast (convolutions and the fc in bf16,
BatchNorm in float32); logits and features come back float32.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from symexp.components import Model
from symexp.metrics import unit_vectors
from symexp.schema import Positive

STAGES = (64, 128, 256, 512)


@dataclass
class ResNetConfig(Model):
    name: Literal["resnet18"] = "resnet18"
    width: Positive = 1.0  # multiplier of the stage widths 64-128-256-512
    bf16: Literal["auto", "always", "never"] = "auto"  # bf16 autocast of the forward; auto = on CUDA only
    reads = ("images",)

    def build(self, data) -> nn.Module:
        return ResNet18(data.x.shape[1], len(data.classes), self.width, self.bf16)


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm on input in its own parameters' dtype: under bf16 autocast the vmapped batch_norm
    rejects a bf16 input with float32 statistics (measured on CPU); float32 BatchNorm is what airbench
    keeps too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(self.weight.dtype))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, in_channels: int, n_classes: int, width: float = 1.0, bf16: str = "auto"):
        super().__init__()
        widths = [max(1, round(c * width)) for c in STAGES]
        self.bf16 = bf16  # auto | always | never
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = BatchNorm2d(widths[0])
        blocks, c_in = [], widths[0]
        for s, c in enumerate(widths):
            stage = nn.Sequential(BasicBlock(c_in, c, 1 if s == 0 else 2), BasicBlock(c, c, 1))
            blocks.append(stage)
            c_in = c
        self.layer1, self.layer2, self.layer3, self.layer4 = blocks
        self.linear = nn.Linear(widths[-1], n_classes)
        # one probe per block's hidden channels: "layer{s}.{b}" -> that block
        self.probes = {f"layer{s}.{b}": ("units",) for s in range(1, 5) for b in range(2)}

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()  # torch defaults; BatchNorm also resets its running statistics

    def forward(self, x: torch.Tensor, features: bool = False):
        """Logits [N, classes] (float32); with features=True also the penultimate (post-pool) features."""
        # channels_last cannot be forced here: inside vmap, clone(memory_format=channels_last) is NYI
        # (torch 2.13); image data sets are stored channels_last on CUDA instead (symexp.data.images)
        bf16 = self.bf16 == "always" or (self.bf16 == "auto" and x.is_cuda)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            h = F.relu(self.bn1(self.conv1(x)))
            h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
            feats = h.mean(dim=(2, 3))  # global average pool; adaptive_avg_pool2d hits a slow vmap fallback
            logits = self.linear(feats)
        logits, feats = logits.float(), feats.float()
        return (logits, feats) if features else logits

    def probe_views(self, theta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-block unit vectors [M, c, p] of the hidden channels (see the module docstring)."""
        views = {}
        for layer in self.probes:
            p = f"{layer}."
            views[layer] = unit_vectors(theta[p + "conv1.weight"], theta[p + "conv2.weight"],
                                        theta[p + "bn1.weight"], theta[p + "bn1.bias"])
        return views
