"""Tensors a finding's measures read, built from weights stacked over members `[M, ...]`."""
from __future__ import annotations

import torch

from symexp import metrics

Tensors = dict[str, torch.Tensor]


class UnitParts:
    """Per-unit incoming parts ``[M, h, a]`` (first: the input map's rows; then per-unit params) and
    outgoing parts ``[M, h, b]`` (each output map's columns of unit i, flattened)."""

    def __init__(self, theta: Tensors, h: int, incoming: list[str], outgoing: list[str]):
        self.h = h
        self.incoming = [_rows(theta[n], h) for n in incoming]
        self.outgoing = [_columns(theta[n], h) for n in outgoing]

    def vectors(self) -> torch.Tensor:
        """symexp.metrics.unit_vectors of the parts: ``[M, h, p]``."""
        w_out = torch.cat(self.outgoing, dim=-1).transpose(1, 2)  # [M, b, h]: unit i's outgoing weights in column i
        return metrics.unit_vectors(self.incoming[0], w_out, *self.incoming[1:])

    def in_sq(self) -> torch.Tensor:
        return sum(t.double().square().sum(-1) for t in self.incoming)

    def out_sq(self) -> torch.Tensor:
        return sum(t.double().square().sum(-1) for t in self.outgoing)


def _rows(t: torch.Tensor, h: int) -> torch.Tensor:
    return t.reshape(t.shape[0], h, -1)


def _columns(w: torch.Tensor, h: int) -> torch.Tensor:
    """Output map ``[M, o, fan_in, ...]`` -> ``[M, h, o * rest]``; fan_in = h * r after a flatten."""
    M, o, fan_in = w.shape[:3]
    w = w.reshape(M, o, h, fan_in // h, *w.shape[3:])
    return w.movedim(2, 1).reshape(M, h, -1)


def space_vectors(spec: dict, theta: Tensors) -> torch.Tensor:
    """Unit vectors ``[M, h, p]`` of a permutation: each part's slice on its channel axis, concatenated
    (a writer's row, per-channel parameters, a reader's column; symexp.metrics.unit_vectors' layout)."""
    h = spec["h"]
    return torch.cat([theta[p].movedim(axis + 1, 1).reshape(theta[p].shape[0], h, -1) for p, axis in spec["parts"]],
                     dim=-1)


def unit_parts(spec: dict, theta: Tensors, incoming: str) -> UnitParts:
    """incoming="w_in": the permutation block (input map rows + per-unit params); "in": the rescaling block."""
    names = [spec["w_in"], *spec["rows"]] if incoming == "w_in" else spec["in"]
    return UnitParts(theta, spec["h"], names, spec["out"])


def inner_matrices(spec: dict, theta: Tensors) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Rotation: the two factors of the map through the inner units (``[M, out, h]``, ``[M, h, in]``) and
    G = [W_in | b | W_out^T] ``[M, h, c]``.

    For convolutions the kernel taps are folded into the outer dimensions (out*k, in*k'), so the
    product is the map through the h inner channels, whose rank the rotation acts on.
    """
    h = spec["h"]
    a = _rows(theta[spec["w_in"]], h)
    b = torch.cat([_columns(theta[n], h) for n in spec["out"]], dim=-1)  # [M, h, out*k]
    biases = [_rows(theta[n], h) for n in spec["rows"]]
    return (b.transpose(1, 2), a), torch.cat([a, *biases, b], dim=-1)


def head_blocks(spec: dict, theta: Tensors) -> dict[str, torch.Tensor]:
    """Per query head: q, k, v rows ``[M, H, d_head, d_in]`` (K/V repeated over a group's query heads) and
    o columns ``[M, H, d_out, d_head]``."""
    out = {r: theta[spec[r][0]][:, spec[r][1]] for r in "qkv"}
    name, cols = spec["o"]
    out["o"] = theta[name][:, :, cols].permute(0, 2, 1, 3)
    return out
