"""How far each found symmetry's structure has gone, on weights stacked over members `[M, ...]`.

Unit symmetries use symexp.metrics' unit vectors v_i = [incoming, per-unit params, outgoing] and its
dead/independent-unit rules, so counts agree with the experiments' own metrics on the same weights.
Distances to a mirror plane are ||O^T theta|| / ||theta||:
* a pair of units i, j (permutation, O = (e_i - e_j)/sqrt2 (x) I): ||v_i - v_j|| / sqrt(2 (||v_i||^2 + ||v_j||^2)),
  on the plane when 2||v_i - v_j||^2 / (||v_i||^2 + ||v_j||^2) < unit_tol (live units only);
* a unit (sign/rescaling, O = unit i's coordinates, theta = the layer's units): ||v_i|| / ||V||, on the
  plane when ||v_i|| < dead_tau max_j ||v_j||;
* an inner direction k of a rotation (O = that direction): sigma_k(G) / ||G||, G the inner-dimension
  matrix [W_in | b | W_out^T]; directions switched off are counted on the product by the tau-rank rule.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from symexp import metrics
from symexp.audit.units import UnitParts

Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Thresholds:
    """Defaults are symexp's metric defaults (configs/config.yaml `metrics:`)."""

    dead_tau: float = 0.1  # unit at zero: ||v_i|| / max_j ||v_j|| < dead_tau
    unit_tol: float = 0.1  # duplicate pair: 2||v_i - v_j||^2 / (||v_i||^2 + ||v_j||^2) < unit_tol
    rank_tau: float = 1e-3  # direction switched off: sigma_k <= rank_tau * sigma_1
    rank_atol: float = 0.0  # and singular values <= rank_atol count as 0 (0: off)
    active_atol: float = 0.0  # never active: max |activation| over the example inputs <= active_atol
    origin_rtol: float = 1e-6  # the decay origin theta_0 lies on a plane: ||O^T theta_0|| <= origin_rtol ||theta_0||


ORIGIN_NOTE = "mirror planes through the decay origin theta_0 (offsets); weight decay favours only those"


class Rows:
    """Tidy rows, one per member x (layer, symmetry, measure)."""

    def __init__(self, members: int):
        self.members, self.rows = members, []

    def add(self, layer: str, symmetry: str, measure: str, value, of: int | None = None,
            threshold: float | None = None, note: str = "") -> None:
        vals = value.tolist() if torch.is_tensor(value) else [value] * self.members
        for m, v in enumerate(vals):
            self.rows.append({"member": m, "layer": layer, "symmetry": symmetry, "measure": measure,
                              "value": float(v), "threshold": threshold, "count": None if of is None else int(round(v)),
                              "of": of, "note": note})


def pair_distances(V: torch.Tensor) -> torch.Tensor:
    """d_ij = ||v_i - v_j|| / sqrt(2 (||v_i||^2 + ||v_j||^2)) in float64; ``[M, h, p] -> [M, h, h]`` (0 for two zeros)."""
    Vs = V.double()
    peak = Vs.abs().flatten(1).amax(1).clamp_min(torch.finfo(torch.float64).tiny)[:, None, None]
    Vs = Vs / peak  # scale-free measure; keeps squares in range
    sq = Vs.square().sum(-1)
    denom = sq[:, :, None] + sq[:, None, :]
    d2 = (denom - 2 * Vs @ Vs.transpose(1, 2)).clamp_min(0)
    return (d2 / (2 * torch.where(denom > 0, denom, torch.ones_like(denom)))).sqrt()


def _live(V: torch.Tensor, dead_tau: float) -> torch.Tensor:
    norms = torch.linalg.vector_norm(V.double(), dim=-1)
    return (norms >= dead_tau * norms.amax(1, keepdim=True)) & (norms > 0)


FLOAT32_ABOVE = 2_000_000  # entries per member above which pair distances are screened in float32


def permutation_rows(rows: Rows, layer: str, V: torch.Tensor, th: Thresholds, V0: torch.Tensor | None,
                     symmetry: str = "permutation", note: str = "") -> None:
    """Dead/duplicate units and pair distances of unit vectors ``[M, h, p]``."""
    M, h = V.shape[:2]
    i, j = torch.triu_indices(h, h, 1)  # every pair once
    if V[0].numel() > FLOAT32_ABOVE:  # wide layers, residual streams: the Gram in float32, near pairs exact
        live, dist = _screened(V, th, i, j)
        dead = (~live).sum(1).double()
    else:
        V = V.double()  # every measure below works in float64
        live = _live(V, th.dead_tau)
        dist = pair_distances(V)[:, i, j]  # [M, pairs]
        dead = (metrics.dead_fraction(V, th.dead_tau).double() * h).round()
    live_pairs = live[:, i] & live[:, j]
    rel = 4 * dist.square()  # = 2||v_i - v_j||^2 / (||v_i||^2 + ||v_j||^2), the independent-unit rule
    on_plane = live_pairs & (rel < th.unit_tol)
    independent = _independent(V, live, live_pairs & (rel < 2 * th.unit_tol), (i, j), th)
    groups = torch.tensor([_groups(h, i[on_plane[m]], j[on_plane[m]]) for m in range(M)], dtype=torch.float64)
    add = lambda measure, value, **kw: rows.add(layer, symmetry, measure, value, note=note, **kw)  # noqa: E731
    add("dead_units", dead, of=h, threshold=th.dead_tau)
    add("independent_units", independent, of=h, threshold=th.unit_tol)
    add("duplicate_units", live.sum(1).double() - independent, of=h, threshold=th.unit_tol)
    add("duplicate_groups", groups, of=h // 2, threshold=th.unit_tol)
    add("pairs_on_plane", on_plane.sum(1).double(), of=len(i), threshold=th.unit_tol)
    masked = [dist[m][live_pairs[m]] for m in range(M)]
    add("pair_distance_min", _stat(masked, torch.min))
    add("pair_distance_median", _stat(masked, torch.median))
    if V0 is not None:
        on0 = pair_distances(V0)[:, i, j] <= th.origin_rtol
        rows.add(layer, symmetry, "origin_on_plane", on0.sum(1).double(), of=len(i), threshold=th.origin_rtol,
                 note=ORIGIN_NOTE)


def _screened(V: torch.Tensor, th: Thresholds, i: torch.Tensor, j: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(live units, pair distances) with the Gram matrix in the input's precision (float32: ~1e-6 of the
    squared norms) and every pair that could be near a plane (rel < 2 unit_tol + 1e-3) recomputed from its
    two vectors in float64, so counts and small distances are exact; norms are summed in float64."""
    peak = V.abs().flatten(1).amax(1).clamp_min(torch.finfo(V.dtype).tiny)[:, None, None]
    Vs = V / peak
    sq = Vs.square().sum(-1, dtype=torch.float64)
    norms = sq.sqrt()
    live = (norms >= th.dead_tau * norms.amax(1, keepdim=True)) & (norms > 0)
    gram = (Vs @ Vs.transpose(1, 2)).double()
    denom = sq[:, :, None] + sq[:, None, :]
    d2 = (denom - 2 * gram).clamp_min(0) / (2 * torch.where(denom > 0, denom, torch.ones_like(denom)))
    dist = d2[:, i, j].sqrt()
    near = 4 * dist.square() < 2 * th.unit_tol + 1e-3
    for m in range(V.shape[0]):
        k = torch.nonzero(near[m]).flatten()
        if len(k):
            a, b = Vs[m, i[k]].double(), Vs[m, j[k]].double()
            n = a.square().sum(-1) + b.square().sum(-1)
            dist[m, k] = ((a - b).square().sum(-1) / (2 * torch.where(n > 0, n, torch.ones_like(n)))).sqrt()
    return live, dist


def _independent(V: torch.Tensor, live: torch.Tensor, candidate: torch.Tensor, pairs: tuple, th: Thresholds) -> torch.Tensor:
    """metrics.independent_units, run only on units in a candidate duplicate pair (twice the tolerance,
    so float64 round-off cannot hide one) plus the largest unit (which fixes the dead rule's scale).

    Exact: a unit with no duplicate opens its own group and absorbs none in the greedy pass, so leaving
    it out changes no other unit's group; it is added back as one group. The full pairwise pass
    (distances without the matmul shortcut) is what makes the exact count slow on wide layers."""
    out = []
    for m in range(V.shape[0]):
        cand = torch.zeros(V.shape[1], dtype=torch.bool)
        cand[pairs[0][candidate[m]]], cand[pairs[1][candidate[m]]] = True, True
        if not bool(cand.any()):
            out.append(float(live[m].sum()))
            continue
        cand[torch.linalg.vector_norm(V[m], dim=-1).argmax()] = True
        groups = metrics.independent_units(V[m:m + 1, cand], th.unit_tol, th.dead_tau)[0]
        out.append(float(groups) + float((live[m] & ~cand).sum()))
    return torch.tensor(out, dtype=torch.float64)


def _stat(values: list[torch.Tensor], fn) -> torch.Tensor:
    return torch.tensor([float(fn(v)) if v.numel() else float("nan") for v in values], dtype=torch.float64)


def _groups(h: int, i: torch.Tensor, j: torch.Tensor) -> int:
    """Connected groups of two or more units joined by pairs (i, j) on each other's plane."""
    adjacent = coo_matrix((np.ones(len(i)), (i.numpy(), j.numpy())), shape=(h, h))
    _, labels = connected_components(adjacent, directed=False)
    return int((np.bincount(labels) >= 2).sum())


def zero_unit_rows(rows: Rows, layer: str, symmetry: str, parts: UnitParts, th: Thresholds,
                   parts0: UnitParts | None) -> None:
    """Sign / rescaling: units whose whole block [in, out] is at zero, distances, balance."""
    V = parts.vectors().double()
    h = V.shape[1]
    norms = torch.linalg.vector_norm(V.double(), dim=-1)
    total = torch.linalg.vector_norm(norms, dim=1, keepdim=True)
    dist = norms / torch.where(total > 0, total, torch.ones_like(total))
    rows.add(layer, symmetry, "zero_units", (metrics.dead_fraction(V, th.dead_tau).double() * h).round(), of=h,
             threshold=th.dead_tau)
    rows.add(layer, symmetry, "unit_distance_min", dist.amin(1))
    rows.add(layer, symmetry, "unit_distance_median", dist.median(1).values)
    if symmetry == "rescaling":
        a, b = parts.in_sq(), parts.out_sq()
        balance = ((a - b).abs() / torch.where(a + b > 0, a + b, torch.ones_like(a)))
        live = _live(V, th.dead_tau)
        rows.add(layer, symmetry, "imbalance_median", _stat([balance[m][live[m]] for m in range(len(V))], torch.median),
                 note="|(|w_in|^2 - |w_out|^2)| / (|w_in|^2 + |w_out|^2) over live units; 0 = balanced")
    if parts0 is not None:
        n0 = torch.linalg.vector_norm(parts0.vectors().double(), dim=-1)
        on = n0 <= th.origin_rtol * n0.amax(1, keepdim=True)
        rows.add(layer, symmetry, "origin_on_plane", on.sum(1).double(), of=h, threshold=th.origin_rtol, note=ORIGIN_NOTE)


def never_active_rows(rows: Rows, layer: str, amax: torch.Tensor, th: Thresholds, n_inputs: str) -> None:
    rows.add(layer, "permutation", "never_active", float((amax <= th.active_atol).sum()), of=amax.numel(),
             threshold=th.active_atol, note=f"activation max |a| <= threshold on the example inputs ({n_inputs})")


@contextlib.contextmanager
def one_thread():
    """Batched LAPACK on many small matrices (rank cores, G) in one thread: on a loaded 2-core machine
    its per-matrix thread pool cost 100x the work (6 SVDs of 64 x 64: 0.42 s with 2 threads, 4 ms with 1)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def product_core(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """A small matrix with the singular values of left @ right (``[.., m, h] @ [.., h, n]``), in float64.

    With left = Q_l R_l and right^T = Q_r R_r, left @ right = Q_l (R_l R_r^T) Q_r^T, so R_l R_r^T
    (at most h x h) has the same spectrum; SVDs of d x d attention products are the audit's cost otherwise.
    """
    with one_thread():
        r_left = torch.linalg.qr(left.double(), mode="r").R
        r_right = torch.linalg.qr(right.double().transpose(-2, -1), mode="r").R
    return r_left @ r_right.transpose(-2, -1)


def rank_rows(rows: Rows, layers: list[str], symmetry: str, P: torch.Tensor, max_rank: int, th: Thresholds,
              prefix: str = "", off: bool = True) -> None:
    """Rank family of product matrices ``[M, L, m, n]`` (or their product_core), one set of rows per
    layer name (heads of one attention layer are computed in one batch), and the directions switched off."""
    M, L = P.shape[:2]
    flat = P.flatten(0, 1)
    with one_thread():
        r = metrics.tau_rank(flat, th.rank_tau, th.rank_atol).double().view(M, L)
        er = metrics.erank(flat, th.rank_atol).view(M, L)
        sr = metrics.stable_rank(flat, th.rank_atol).view(M, L)
    for j, layer in enumerate(layers):
        rows.add(layer, symmetry, prefix + "tau_rank", r[:, j], threshold=th.rank_tau)
        rows.add(layer, symmetry, prefix + "erank", er[:, j])
        rows.add(layer, symmetry, prefix + "stable_rank", sr[:, j])
        if off:  # directions a symmetry can switch off (not for a product whose factor another head shares)
            rows.add(layer, symmetry, prefix + "off_directions", max_rank - r[:, j], of=max_rank, threshold=th.rank_tau)


def direction_distance(G: torch.Tensor) -> torch.Tensor:
    """min_k sigma_k(G) / ||G||_F over the h inner directions (rows of G ``[M, h, c]``); 0 if h > c."""
    G = G.double()
    with one_thread():
        if G.shape[2] > G.shape[1]:  # the h x h R of G^T = QR has G's singular values, ~3x cheaper to get
            G = torch.linalg.qr(G.transpose(1, 2), mode="r").R
        s = metrics.singular_values(G)
    norm = torch.linalg.vector_norm(s, dim=1)
    weakest = s[:, -1] if G.shape[1] <= G.shape[2] else torch.zeros_like(norm)
    return weakest / torch.where(norm > 0, norm, torch.ones_like(norm))


def origin_directions(G0: torch.Tensor, th: Thresholds) -> torch.Tensor:
    """Inner directions k with Pi_k G0 = 0: rotation mirror planes through the decay origin ``[M]``."""
    with one_thread():
        return G0.shape[1] - metrics.tau_rank(G0.double(), th.origin_rtol).double()
