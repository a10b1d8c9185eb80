"""Rotary position embeddings (RoPE): q and k are rotated per position in 2x2 blocks (pairs (d, d + d_head/2)
in Llama's rotate_half, (2i, 2i + 1) interleaved), block f by the angle position * theta_f.

The score q_i^T k_j = x_i^T W_Q^T R(p_j - p_i) W_K x_j, so (W_Q, W_K) -> (A W_Q, A^-T W_K) leaves every
score unchanged only when A commutes with all R(delta): per block a rotation times a rescaling (a complex
scalar), not any rotation of the head. W_Q^T W_K is therefore not an invariant (no QK rank is claimed); the
invariants are, per block f, W_Q,f^T W_K,f and W_Q,f^T J W_K,f (J the 90-degree rotation), and the structure a
mirror of this group can switch off is a whole frequency block. W_O W_V is untouched by RoPE.
A key bias is no longer redundant under RoPE (q . R(delta) b_K depends on the key's position).
"""
from __future__ import annotations

import math

import torch


def pairs(va: torch.Tensor, vb: torch.Tensor) -> torch.Tensor | None:
    """partner[d] with vb[..., d] = va[..., partner[d]]: an involution without fixed points (2x2 blocks)."""
    row_a, row_b = va.reshape(-1, va.shape[-1]), vb.reshape(-1, vb.shape[-1])
    valid = (row_a >= 0).all(1)
    if not valid.any():
        return None
    ra, rb = row_a[valid][0], row_b[valid][0]
    pos = {int(x): d for d, x in enumerate(ra.tolist())}
    if len(pos) != len(ra) or any(int(x) not in pos for x in rb.tolist()):
        return None
    partner = torch.tensor([pos[int(x)] for x in rb.tolist()])
    ok = (torch.equal(partner[partner], torch.arange(len(partner)))
          and bool((partner != torch.arange(len(partner))).all()))
    return partner if ok and torch.equal(row_a[valid][:, partner], row_b[valid]) else None


def blocks_off(w: dict, order: torch.Tensor, first: torch.Tensor, r: int, partner: torch.Tensor, dead_tau: float):
    """Per group, the rotary blocks f whose QK invariants W_Q,f^T W_K,f and W_Q,f^T J W_K,f vanish for
    every query head of the group: sum_h tr(A_h B) + tr(J^T A_h J B), A_h = Q_h,f Q_h,f^T, B = K_f K_f^T."""
    a = torch.nonzero(torch.arange(len(partner)) < partner).flatten()
    pairs = torch.stack([a, partner[a]], dim=1)  # [blocks, 2]
    q, k = w["q"].double()[:, :, pairs], w["k"][:, first].double()[:, :, pairs]  # [M, H|G, blocks, 2, d_in]
    A = q @ q.transpose(-2, -1)
    A = A[:, order].reshape(A.shape[0], len(first), r, *A.shape[2:]).sum(2)
    B = k @ k.transpose(-2, -1)
    J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)
    n = (A * B.transpose(-2, -1)).sum((-2, -1)) + ((J.T @ A @ J) * B.transpose(-2, -1)).sum((-2, -1))
    scale = n.clamp_min(0) ** 0.25  # in units of the weights
    off = scale < dead_tau * scale.amax(-1, keepdim=True)
    return off.sum(-1).double(), len(a)


def element(partner: torch.Tensor, dh: int, gen, dtype):
    """(A, A^-T) acting on W_Q,h and W_K,g: per 2x2 frequency block a random rotation times a random
    rescaling in [0.5, 2] (the matrices commuting with every rotary rotation)."""
    A, A_inv_t = torch.zeros(dh, dh, dtype=dtype), torch.zeros(dh, dh, dtype=dtype)
    for a in range(dh):
        b = int(partner[a])
        if a > b:
            continue
        phi = float(torch.rand((), generator=gen)) * 2 * math.pi
        scale = 0.5 + 1.5 * float(torch.rand((), generator=gen))
        c, sn = math.cos(phi), math.sin(phi)
        idx = torch.tensor([a, b])
        rot = torch.tensor([[c, -sn], [sn, c]], dtype=dtype)
        A[idx[:, None], idx[None, :]] = scale * rot
        A_inv_t[idx[:, None], idx[None, :]] = rot / scale
    return A, A_inv_t
