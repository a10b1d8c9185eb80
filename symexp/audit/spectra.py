"""The spectrum of every weight matrix: WeightWatcher's per-layer view, measured with symexp's rank metrics.

Each parameter that is a matrix (Linear, transformers' Conv1D [in, out], Embedding, attention
projections, any 2-D parameter) or a stack of matrices (a conv weight) gets one row per measure, on the
combined spectrum of its matrices (symmetry "spectrum", layer = the parameter's name):

* a conv weight [out, in/g, *kernel] is read as WeightWatcher reads it: one matrix W[:, :, i, j] per kernel
  position (WeightWatcher's conv2D_Wmats), all singular values pooled into one spectrum. With groups g
  each position's map is block diagonal, so its singular values are those of the g blocks
  [out/g, in/g] (WeightWatcher slices [out, in/g] as if the groups shared their inputs);
* a parameter with two dimensions above 1 ([1, T, d] position tables) is that matrix; one with three or
  more that no conv traced reads as a conv weight, as WeightWatcher does by shape.

Measures (symexp.metrics.rank on the pooled spectrum, names from symexp.metrics.names): stable rank
||W||_F^2 / ||W||_2^2 (WeightWatcher's stable_rank: its conv ESD pools the same slices), erank, the tau-rank
(of = the number of singular values) and sigma_1 (WeightWatcher's spectral_norm is sigma_1^2).

Singular values come from the Gram matrix on the smaller side, in float64 (BLAS syrk, LAPACK eigh): for
GPT-2's 50257 x 768 embedding 0.87 CPU-s against 1.79 for a float32 SVD (1 thread), equal to 1e-14 sigma_1;
float64 resolves sigma down to ~1e-8 sigma_1, far below rank_tau.
"""
from __future__ import annotations

import math
import re

import numpy as np
import torch
from scipy.linalg import eigh
from scipy.linalg.blas import dsyrk
from threadpoolctl import threadpool_limits

from symexp import metrics
from symexp.audit.graph import OpGraph
from symexp.audit.measures import Rows, Thresholds, one_thread
from symexp.metrics import names

Tensors = dict[str, torch.Tensor]
SYMMETRY = "spectrum"  # the `symmetry` column of these rows: a per-matrix view, not a symmetry
CONV = re.compile(r"conv(_transpose)?[123]d")
SMALL = 16  # blocks with a side this short go through one batched torch call, larger ones one at a time


def conv_groups(graph: OpGraph, name: str) -> int | None:
    """The groups of the conv that reads parameter `name` as its weight; None if no conv does."""
    for i in sorted(graph.param_users.get(name, ())):
        op = graph.ops[i]
        if CONV.fullmatch(op.name) and name in (op.params.get("weight"), op.params.get("arg1")):
            # conv*d and conv_transpose*d both take groups as their 7th argument
            return int(op.meta.get("groups", op.meta.get("arg6", 1)))
    return None


def blocks(w: torch.Tensor, groups: int | None) -> tuple[torch.Tensor, str] | None:
    """Parameter stacked over members ``[M, ...]`` -> its matrices ``[M, B, m, n]`` and how they were
    read; None for a vector or scalar."""
    shape = w.shape[1:]
    big = [d for d in shape if d > 1]
    if groups is None and len(shape) >= 3 and len(big) == 2:
        return w.reshape(w.shape[0], 1, *big), f"matrix {big[0]} x {big[1]} (size-1 dimensions dropped)"
    if len(shape) == 2:
        return w[:, None], ""
    if len(shape) < 2 or len(big) < 2:
        return None
    g = groups or 1
    out, cols, kernel = shape[0], shape[1], math.prod(shape[2:])
    # [M, out, cols, K] -> [M, K, g, out/g, cols] -> one block per kernel position and group
    M = w.shape[0]
    b = w.reshape(M, g, out // g, cols, kernel).permute(0, 4, 1, 2, 3).reshape(M, kernel * g, out // g, cols)
    how = "conv" if groups else "not traced as a conv; read by shape as a conv weight"
    if kernel == 1 and g == 1:
        return b, f"{how} 1x1: matrix {out} x {cols}"
    grouped = f" x {g} groups" if g > 1 else ""
    return b, f"{how}: {kernel} kernel positions{grouped}, blocks {out // g} x {cols}, singular values pooled"


def singular_values(b: torch.Tensor) -> torch.Tensor:
    """The pooled singular values of blocks ``[M, B, m, n]``, largest first: ``[M, B * min(m, n)]``; NaN for
    a member whose blocks are not all finite."""
    M, B, m, n = b.shape
    b = b.double()
    if min(m, n) <= SMALL:  # many tiny blocks (depthwise, grouped or an RGB conv's): one batched call
        G = b.transpose(-2, -1) @ b if m >= n else b @ b.transpose(-2, -1)
        ok = torch.isfinite(G).flatten(2).all(2)
        with one_thread():
            ev = torch.linalg.eigvalsh(torch.where(ok[..., None, None], G, 0))
        ev = torch.where(ok[..., None], ev, float("nan"))
    else:
        ev = torch.stack([_eigenvalues(block.numpy()) for block in b.flatten(0, 1)]).view(M, B, -1)
    s = ev.clamp_min(0).sqrt().flatten(1).sort(dim=1, descending=True).values
    return torch.where(s.isnan().any(1, keepdim=True), float("nan"), s)


def _eigenvalues(a: np.ndarray) -> torch.Tensor:
    """Eigenvalues of the Gram matrix on a's smaller side. BLAS's syrk fills one triangle, half the work of a
    matmul; it wants a Fortran-ordered operand x, and a or its transpose is one without a copy."""
    ata = a.shape[0] >= a.shape[1]  # a^T a, else a a^T
    x = a if a.flags.f_contiguous else a.T
    G = dsyrk(1.0, x, trans=int(ata) if x is a else int(not ata))  # x x^T (trans=0) or x^T x (trans=1)
    if not np.isfinite(G).all():
        return torch.full((len(G),), float("nan"), dtype=torch.float64)
    return torch.from_numpy(eigh(G, lower=False, eigvals_only=True, overwrite_a=True, check_finite=False))


def spectrum_rows(rows: Rows, graph: OpGraph, theta: Tensors, th: Thresholds) -> None:
    """Stable rank, erank, tau-rank and sigma_1 of every weight matrix of `theta` ``{name: [M, ...]}``."""
    with threadpool_limits(1, user_api="blas"):  # LAPACK's eigh on 2 BLAS threads: 4x the CPU time (loaded 2 cores)
        for name, w in theta.items():
            read = blocks(w, conv_groups(graph, name)) if w.is_floating_point() else None
            if read is not None:
                _rows(rows, name, singular_values(read[0]), read[1], th)


def _rows(rows: Rows, name: str, s: torch.Tensor, note: str, th: Thresholds) -> None:
    finite = ~s[:, 0].isnan()
    keep = lambda v: torch.where(finite, v.double(), float("nan"))  # noqa: E731 - non-finite weights: no rank
    if not bool(finite.all()):
        note = "; ".join(filter(None, [note, "non-finite weights in some members: NaN there"]))
    # metrics.rank's measures read the dtype of their first argument only when sv is given
    rows.add(name, SYMMETRY, names.stable_rank(th.rank_atol), keep(metrics.stable_rank(s, th.rank_atol, sv=s)),
             note=note)
    rows.add(name, SYMMETRY, names.erank(th.rank_atol), keep(metrics.erank(s, th.rank_atol, sv=s)), note=note)
    rows.add(name, SYMMETRY, names.tau_rank(th.rank_tau, th.rank_atol),
             keep(metrics.tau_rank(s, th.rank_tau, th.rank_atol, sv=s)), threshold=th.rank_tau, note=note,
             of=s.shape[1] if bool(finite.all()) else None)  # a count needs a number in every member
    rows.add(name, SYMMETRY, names.singular_value(0), keep(s[:, 0]), note=note)
