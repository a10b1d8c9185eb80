"""Plasticity metrics (symexp.metrics.plasticity) on planted networks and against LoP's definitions."""
import numpy as np
import pytest
import torch

from symexp.metrics import plasticity as lp

IN, HIDDEN, OUT = 4, 7, 3


def planted_layer():
    """Two members of a ReLU layer with known units; probe inputs x in [0, 1]^IN.

    Member 0: unit 0 all zero (on the zero plane, hence dead); unit 1 dead by its bias but with large
    weights (dead, NOT on a plane); unit 2 with zero outgoing weights only (neither); units 3 and 4
    identical (one duplicate); units 5, 6 generic. Member 1: generic, except unit 6, which is active
    on about half of the probe inputs only (alive).
    """
    g = torch.Generator().manual_seed(0)
    w_in = torch.randn(2, HIDDEN, IN, generator=g, dtype=torch.float64).abs() + 0.5
    bias = torch.zeros(2, HIDDEN, dtype=torch.float64)
    w_out = torch.randn(2, OUT, HIDDEN, generator=g, dtype=torch.float64)
    w_in[0, 0], bias[0, 0], w_out[0, :, 0] = 0.0, 0.0, 0.0
    w_in[0, 1], bias[0, 1] = -w_in[0, 1], -1.0  # pre-activation <= -1 for every x >= 0
    w_out[0, :, 2] = 0.0
    w_in[1, 6] = torch.tensor([1.0, -1.0, 0.0, 0.0], dtype=torch.float64)  # active iff x_0 > x_1
    w_in[0, 4], bias[0, 4], w_out[0, :, 4] = w_in[0, 3], bias[0, 3], w_out[0, :, 3]
    return w_in, bias, w_out


def probe_features(w_in, bias, n=200):
    x = torch.rand(n, IN, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return torch.relu(x @ w_in.transpose(1, 2) + bias[:, None])  # [M, n, HIDDEN]


def test_dead_units_and_mirror_plane_units_are_reported_apart():
    w_in, bias, w_out = planted_layer()
    F = probe_features(w_in, bias)
    assert lp.dead_units(F).tolist() == [2, 0]  # units 0 and 1 of member 0
    assert lp.zero_plane_units(w_in, w_out, bias).tolist() == [1, 0]  # unit 0 only: unit 1 is dead, not on it
    assert lp.duplicate_units(w_in, w_out, bias).tolist() == [1, 0]  # unit 4 copies unit 3


def test_zero_plane_needs_both_incoming_and_outgoing_near_zero():
    w_in, bias, w_out = planted_layer()
    w_in[1, 5] = 0.0  # member 1: unit 5 has no input, but still an output weight
    bias[1, 5] = 0.0
    w_out[1, :, 6] = 0.0  # unit 6 has no output, but still inputs
    assert lp.zero_plane_units(w_in, w_out, bias).tolist() == [1, 0]
    w_out[1, :, 5] = 0.0  # now unit 5 is on the plane
    assert lp.zero_plane_units(w_in, w_out, bias).tolist() == [1, 1]


def test_zero_plane_scale_catches_a_layer_that_shrank_as_a_whole():
    w_in, bias, w_out = planted_layer()
    shrunk = [t * 1e-6 for t in (w_in, bias, w_out)]
    # relative to the member's own largest unit, nothing new is on the plane ...
    assert lp.zero_plane_units(shrunk[0], shrunk[2], shrunk[1]).tolist() == [1, 0]
    # ... relative to the scale at initialisation, every unit is
    init_scale = torch.linalg.vector_norm(w_in.flatten(1), dim=1) / HIDDEN ** 0.5
    assert lp.zero_plane_units(shrunk[0], shrunk[2], shrunk[1], scale=init_scale).tolist() == [HIDDEN, HIDDEN]
    with pytest.raises(ValueError, match="scale"):
        lp.zero_plane_units(w_in, w_out, bias, scale=torch.ones(3))


def lop_effective_rank(features: np.ndarray) -> float:
    """LoP's compute_effective_rank, written out in numpy: exp(-sum p log p), p = sigma / sum |sigma|."""
    sv = np.linalg.svd(features, compute_uv=False)
    p = sv / np.abs(sv).sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def test_feature_effective_rank_matches_lop_definition():
    w_in, bias, _ = planted_layer()
    F = probe_features(w_in, bias)  # member 0 has two dead (all-zero) columns
    g = torch.Generator().manual_seed(2)
    low = (torch.randn(1, 200, 2, generator=g, dtype=torch.float64)
           @ torch.randn(1, 2, HIDDEN, generator=g, dtype=torch.float64))
    F = torch.cat([F, low])
    measured = lp.feature_effective_rank(F)
    for m in range(F.shape[0]):
        assert measured[m].item() == pytest.approx(lop_effective_rank(F[m].numpy()), rel=1e-12)
    assert measured[2] < 2.0 + 1e-9  # rank-2 features: erank <= 2
    assert lp.feature_effective_rank(torch.zeros(1, 5, 3)).tolist() == [0.0]  # the documented all-dead case


def test_weight_magnitude_sum_and_mean():
    W = torch.tensor([[[1.0, -2.0], [0.0, 3.0]], [[0.5, 0.5], [-0.5, 0.5]]])
    assert lp.weight_magnitude(W).tolist() == [6.0, 2.0]
    assert lp.weight_magnitude(W, reduce="mean").tolist() == [1.5, 0.5]
    with pytest.raises(ValueError, match="reduce"):
        lp.weight_magnitude(W, reduce="max")


def test_features_must_be_members_by_examples_by_units():
    with pytest.raises(ValueError, match=r"\[M, N, units\]"):
        lp.dead_units(torch.zeros(5, 3))
