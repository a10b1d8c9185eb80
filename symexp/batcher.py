"""Per-member minibatches and label noise, drawn on the device from each member's own generators."""
from __future__ import annotations

import torch

from symexp import optim
from symexp.data import TensorData
from symexp.data.images import crop_flip, crop_flip_params
from symexp.ensemble import AUGMENT_STREAM, NOISE_STREAM, ORDER_STREAM


class Batcher:
    """Per-member batches: member m permutes the data with its own generator every epoch and draws
    its own fresh label noise, so its batches do not depend on which other members run beside it."""

    def __init__(self, data: TensorData, batch_size: int | None, members: list[dict], label_noise: torch.Tensor):
        self.data, self.bs, self.noise = data, batch_size, label_noise
        self.order = [torch.Generator().manual_seed(m["seed"] + ORDER_STREAM) for m in members]
        self.noise_gen = [torch.Generator().manual_seed(m["seed"] + NOISE_STREAM) for m in members]
        self.noisy = bool((label_noise > 0).any())
        self.augment = data.augment  # images: Augment(pad, flip), else None
        self.aug_gen = [torch.Generator(device=data.x.device).manual_seed(m["seed"] + AUGMENT_STREAM)
                        for m in members] if self.augment else []
        self.perm, self.pos = None, 0

    @property
    def per_member_x(self) -> bool:
        return self.bs is not None

    @property
    def per_member_y(self) -> bool:
        return self.bs is not None or self.noisy

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.x, self.data.y
        if self.bs is not None:
            if self.perm is None or self.pos + self.bs > self.data.n:  # new epoch; drop the ragged tail
                self.perm = torch.stack([torch.randperm(self.data.n, generator=g) for g in self.order])
                self.perm, self.pos = self.perm.to(x.device), 0
            idx = self.perm[:, self.pos:self.pos + self.bs]  # [M, B]
            self.pos += self.bs
            x, y = x[idx], y[idx]
            if self.augment:  # images: each member draws its own crops and flips; one gather applies all
                pad, flip = self.augment.pad, self.augment.flip
                draws = [crop_flip_params(self.bs, pad, flip, g, x.device) for g in self.aug_gen]
                dy, dx, flipped = (torch.cat(d) for d in zip(*draws))
                x = crop_flip(x.flatten(0, 1), dy, dx, flipped, pad).unflatten(0, idx.shape)
        if self.noisy:  # fresh label noise every step: a pure gradient-noise knob (paper.md 2.4)
            shape = y.shape[1:] if self.bs is not None else y.shape  # one member's targets
            eps = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in self.noise_gen])
            y = y + optim.per_member(self.noise, eps) * eps.to(y.device, y.dtype)
        return x, y

    def state_dict(self) -> dict:
        return {"order": [g.get_state() for g in self.order], "noise": [g.get_state() for g in self.noise_gen],
                "augment": [g.get_state() for g in self.aug_gen], "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, s: dict) -> None:
        for g, st in zip(self.order, s["order"]):
            g.set_state(st)
        for g, st in zip(self.noise_gen, s["noise"]):
            g.set_state(st)
        for g, st in zip(self.aug_gen, s.get("augment", [])):
            g.set_state(st)
        self.perm, self.pos = s["perm"], s["pos"]
