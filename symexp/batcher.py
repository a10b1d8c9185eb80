"""Per-member minibatches and label noise, drawn on the device from each member's own generators.

A stream data set (symexp.data.streams) has no fixed training set: the batcher opens its stream and
draws every batch from it, and keeps the online loss of the current evaluation window (the loss of
each batch before the step that learns from it, as the loss-of-plasticity papers report it). Both are
in `state_dict`, hence in every checkpoint: a resumed job continues the stream and the window exactly.
"""
from __future__ import annotations

import torch

from symexp import optim
from symexp.data import TensorData
from symexp.data.images import crop_flip, crop_flip_params
from symexp.data.streams import StreamData
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
        streaming = isinstance(data, StreamData)
        self.stream = data.start([m["seed"] for m in members], batch_size) if streaming else None
        self.online_sum = torch.zeros(len(members), dtype=torch.float64, device=data.x.device) if streaming else None
        self.online_steps = 0

    @property
    def per_member_x(self) -> bool:
        return self.bs is not None or self.stream is not None

    @property
    def per_member_y(self) -> bool:
        return self.per_member_x or self.noisy

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.x, self.data.y
        if self.stream is not None:
            x, y = self.stream.next()
        elif self.bs is not None:
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
            shape = y.shape[1:] if self.per_member_x else y.shape  # one member's targets
            eps = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in self.noise_gen])
            y = y + optim.per_member(self.noise, eps) * eps.to(y.device, y.dtype)
        return x, y

    def record(self, loss: torch.Tensor) -> None:
        """Add one step's per-member batch loss `[M]` to the online window (streams only)."""
        if self.online_sum is not None:
            self.online_sum += loss.detach().double()  # on the device: no sync per step
            self.online_steps += 1

    def take_online(self) -> torch.Tensor | None:
        """The mean online loss `[M]` of the window since the last call, and a fresh window; None when
        no step was recorded (the first evaluation, or not a stream)."""
        if not self.online_steps:
            return None
        mean = self.online_sum / self.online_steps
        self.online_sum, self.online_steps = torch.zeros_like(self.online_sum), 0
        return mean

    def state_dict(self) -> dict:
        s = {"order": [g.get_state() for g in self.order], "noise": [g.get_state() for g in self.noise_gen],
             "augment": [g.get_state() for g in self.aug_gen], "perm": self.perm, "pos": self.pos}
        if self.stream is not None:
            s.update(stream=self.stream.state_dict(), online_sum=self.online_sum.clone(), online_steps=self.online_steps)
        return s

    def load_state_dict(self, s: dict) -> None:
        for g, st in zip(self.order, s["order"]):
            g.set_state(st)
        for g, st in zip(self.noise_gen, s["noise"]):
            g.set_state(st)
        for g, st in zip(self.aug_gen, s.get("augment", [])):
            g.set_state(st)
        self.perm, self.pos = s["perm"], s["pos"]
        if self.stream is not None:
            self.stream.load_state_dict(s["stream"])
            self.online_sum, self.online_steps = s["online_sum"].clone(), s["online_steps"]
