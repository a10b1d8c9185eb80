"""Known-answer tests for symexp.metrics (each batched over an ensemble axis M)."""
import math

import numpy as np
import pytest
import torch

from symexp.metrics import (
    as_matrix,
    dead_fraction,
    energy_rank,
    erank,
    feature_correlation,
    frac_zero,
    independent_units,
    l1_l2_ratio,
    near_identical_pairs,
    normalised_spectrum,
    singular_values,
    stable_rank,
    tau_rank,
    unit_vectors,
)

RANKS = [tau_rank, erank, stable_rank, energy_rank]


def orthogonal(n, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q


def with_spectrum(s, m=5, n=4, seed=0):
    """Matrix U diag(s) Vᵀ with random orthogonal U, V: its singular values are exactly s."""
    d = torch.zeros(m, n, dtype=torch.float64)
    d[range(len(s)), range(len(s))] = torch.tensor(s, dtype=torch.float64)
    return orthogonal(m, seed) @ d @ orthogonal(n, seed + 1).T


# ---------------------------------------------------------------- sparsity


def test_frac_zero_known_values_and_batch():
    theta = torch.tensor([[1.0, 0.0, 1e-4, 0.5], [2.0, 1e-2, 3e-3, 1.0]])
    # member 0: threshold 1e-3 -> {0, 1e-4} small; member 1: threshold 2e-3 -> nothing small
    assert frac_zero(theta, tau=1e-3).tolist() == [0.5, 0.0]
    # member 1 with tau=1e-2: threshold 2e-2 -> {1e-2, 3e-3} small
    assert frac_zero(theta, tau=1e-2)[1].item() == 0.5


def test_frac_zero_flattens_trailing_dims_and_edge_cases():
    theta = torch.zeros(3, 2, 2)
    theta[1] = torch.tensor([[1.0, 0.0], [1e-4, 0.0]])
    theta[2] = 1.0
    out = frac_zero(theta)
    assert out.shape == (3,)
    assert out.tolist() == [1.0, 0.75, 0.0]  # all-zero member counts as fully sparse
    # tau=0 counts exact zeros only (1e-4 is not zero)
    assert frac_zero(theta, tau=0.0).tolist() == [1.0, 0.5, 0.0]


def test_l1_l2_ratio():
    n = 9
    theta = torch.zeros(3, n)
    theta[0, 4] = -7.0
    theta[1] = 0.3
    out = l1_l2_ratio(theta)
    assert out[0].item() == pytest.approx(1.0)
    assert out[1].item() == pytest.approx(math.sqrt(n))
    assert out[2].item() == 0.0 and not out.isnan().any()
    # scale invariance survives magnitudes whose squares would underflow in float32
    assert l1_l2_ratio(torch.full((1, 4), 1e-30)).item() == pytest.approx(2.0)


# ---------------------------------------------------------------- rank


def test_tau_rank_diagonal():
    W = torch.diag(torch.tensor([3.0, 2.0, 1e-5, 0.0], dtype=torch.float64))[None]
    assert tau_rank(W, tau=1e-3).item() == 2  # threshold 3e-3
    assert tau_rank(W, tau=1e-6).item() == 3  # threshold 3e-6 < 1e-5
    assert singular_values(W)[0].tolist() == pytest.approx([3.0, 2.0, 1e-5, 0.0])


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_equal_spectrum_ranks_are_exact(k):
    W = with_spectrum([1.7] * k, seed=k)[None]
    assert erank(W).item() == pytest.approx(k, abs=1e-9)
    assert stable_rank(W).item() == pytest.approx(k, abs=1e-9)
    assert energy_rank(W, energy=1.0).item() == k
    assert tau_rank(W).item() == k


def test_stable_rank_and_erank_unequal():
    W = with_spectrum([2.0, 1.0])[None]
    assert stable_rank(W).item() == pytest.approx(5 / 4)
    p = torch.tensor([2 / 3, 1 / 3], dtype=torch.float64)
    assert erank(W).item() == pytest.approx(math.exp(-(p * p.log()).sum().item()))


def test_energy_rank_thresholds():
    W = with_spectrum([3.0, 2.0, 1.0])[None]  # energies 9, 4, 1 of 14
    assert energy_rank(W, energy=0.6).item() == 1  # 9/14 = 0.643
    assert energy_rank(W, energy=0.9).item() == 2  # 13/14 = 0.929
    assert energy_rank(W, energy=0.95).item() == 3
    assert energy_rank(W, energy=13 / 14).item() == 2  # boundary is inclusive


def test_batch_gives_per_member_answers():
    W = torch.stack([with_spectrum([1.0] * k, seed=10 + k) for k in (1, 2, 3)])
    assert erank(W).tolist() == pytest.approx([1, 2, 3])
    assert tau_rank(W).tolist() == [1, 2, 3]
    assert energy_rank(W, energy=0.99).tolist() == [1, 2, 3]
    assert normalised_spectrum(W)[2].tolist() == pytest.approx([1, 1, 1, 0], abs=1e-12)


def test_zero_matrix_is_zero_not_nan():
    W = torch.stack([torch.zeros(5, 4, dtype=torch.float64), with_spectrum([1.0, 1.0])])
    for f in RANKS:
        out = f(W)
        assert out.shape == (2,) and not out.isnan().any(), f.__name__
        assert out[0].item() == 0.0, f.__name__
        assert out[1].item() == pytest.approx(2.0), f.__name__
    assert (normalised_spectrum(W)[0] == 0).all()


def test_float32_input():
    W = with_spectrum([4.0] * 3, m=8, n=6, seed=3)[None].float()
    assert erank(W).dtype == torch.float32
    assert erank(W).item() == pytest.approx(3, rel=1e-5)
    assert stable_rank(W).item() == pytest.approx(3, rel=1e-5)
    assert energy_rank(W, energy=1.0).item() == 3  # float32 tail σ ~1e-7 must not add a rank
    assert tau_rank(W).item() == 3
    assert normalised_spectrum(W).shape == (1, 6)


def test_as_matrix_conv_kernel():
    # [M, out, in, k, k] with rank-1 structure over (in, k, k)
    u = torch.randn(2, 4, 1, dtype=torch.float64)
    v = torch.randn(2, 1, 3 * 3 * 3, dtype=torch.float64)
    K = (u @ v).reshape(2, 4, 3, 3, 3)
    assert as_matrix(K).shape == (2, 4, 27)
    assert tau_rank(K).tolist() == [1, 1]


# ---------------------------------------------------------------- homogeneity


def base_units():
    """h=6 units: 0,1,2 identical; 3,4 identical; 5 different -> 3 independent."""
    a = torch.tensor([1.0, 2.0, 0.0, -1.0], dtype=torch.float64)
    b = torch.tensor([0.0, -1.0, 3.0, 1.0], dtype=torch.float64)
    c = torch.tensor([2.0, 0.0, 1.0, 2.0], dtype=torch.float64)
    return torch.stack([a, a, a, b, b, c])


def test_unit_vectors_layout():
    M, h, d, o = 2, 3, 4, 5
    w_in = torch.randn(M, h, d)
    w_out = torch.randn(M, o, h)
    bias = torch.randn(M, h)
    V = unit_vectors(w_in, w_out, bias)
    assert V.shape == (M, h, d + 1 + o)
    assert torch.equal(V[1, 2], torch.cat([w_in[1, 2], bias[1, 2:3], w_out[1, :, 2]]))
    # conv: w_in [M, h, c, k, k], w_out [M, o, h, k, k]
    Vc = unit_vectors(torch.randn(M, h, 2, 3, 3), torch.randn(M, o, h, 3, 3), bias, bias)
    assert Vc.shape == (M, h, 18 + 2 + o * 9)
    with pytest.raises(ValueError):
        unit_vectors(w_in, torch.randn(M, o, h + 1))


def test_independent_units_groups_duplicates():
    V = base_units()[None]
    assert independent_units(V).item() == 3
    assert dead_fraction(V).item() == 0.0


def test_dead_unit_counted_and_excluded():
    V = base_units()
    V[5] *= 1e-3 * V.norm(dim=1).max() / V[5].norm()
    V = V[None]
    assert dead_fraction(V, tau=0.1).item() == pytest.approx(1 / 6)
    assert independent_units(V, dead_tau=0.1).item() == 2
    # with a lower dead threshold the small unit is alive and independent again
    assert independent_units(V, dead_tau=1e-4).item() == 3


@pytest.mark.parametrize("factor, expected", [(0.99, 1), (1.01, 2)])
def test_near_duplicate_tolerance_boundary(factor, expected):
    tol = 0.1
    a = torch.tensor([3.0, 4.0, 0.0], dtype=torch.float64)
    u = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)  # ⟂ a
    # v = a + e·u has relative distance 2e²/(2|a|² + e²); solve for target t.
    t = tol * factor
    e = math.sqrt(2 * t * a.dot(a).item() / (2 - t))
    V = torch.stack([a, a + e * u])[None]
    assert independent_units(V, tol=tol).item() == expected


def test_greedy_grouping_is_not_transitive():
    # 0~1 and 1~2 but 0 !~ 2: greedy opens {0, 1} then {2}.
    V = torch.tensor([[1.0, 0.0], [1.0, 0.2], [1.0, 0.4]], dtype=torch.float64)[None]
    assert independent_units(V, tol=0.05).item() == 2


def test_homogeneity_batch_and_all_zero_member():
    V = torch.stack([base_units(), torch.zeros(6, 4, dtype=torch.float64), torch.eye(6, 4, dtype=torch.float64)])
    assert independent_units(V).tolist() == [3, 0, 4]
    assert dead_fraction(V).tolist() == pytest.approx([0.0, 1.0, 2 / 6])


# ---------------------------------------------------------------- correlation


def features():
    x = torch.tensor([1.0, -1.0, 1.0, -1.0])
    y = torch.tensor([1.0, 1.0, -1.0, -1.0])  # centred and orthogonal to x
    # units: x, 2x+1 (corr +1), -3x (corr -1), constant, y (corr 0)
    return torch.stack([x, 2 * x + 1, -3 * x, torch.full((4,), 0.1), y], dim=1)


def test_feature_correlation_known_values():
    C = feature_correlation(features()[None])[0]
    assert not C.isnan().any()
    assert C[0, 1].item() == pytest.approx(1.0)
    assert C[0, 2].item() == pytest.approx(-1.0)
    assert C[0, 4].item() == pytest.approx(0.0, abs=1e-7)
    assert (C[3] == 0).all() and (C[:, 3] == 0).all()
    assert torch.diagonal(C).tolist() == pytest.approx([1, 1, 1, 0, 1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_feature_correlation_leaves_its_features_alone(dtype):
    """Standardising works in place on its own copy: a float64 input (no conversion copy) is not touched,
    and a member's correlations are numpy's."""
    F = torch.stack([features(), features().flip(0)]).to(dtype)
    before = F.clone()
    C = feature_correlation(F)
    near_identical_pairs(F)
    assert torch.equal(F, before)
    varying = [0, 1, 2, 4]
    expected = np.corrcoef(F[1][:, varying].double().numpy(), rowvar=False)
    assert np.allclose(C[1][varying][:, varying].double().numpy(), expected, atol=1e-6)


def test_near_identical_pairs():
    x, y = features()[:, 0], features()[:, 4]
    z = torch.tensor([1.0, -1.0, -1.0, 1.0])  # centred, orthogonal to x and y
    other = torch.stack([x, 5 * x, y, z, torch.zeros(4)], dim=1)
    F = torch.stack([features(), other, torch.ones(4, 5)])
    out = near_identical_pairs(F, thresh=0.99)
    assert not out.isnan().any()
    # member 0: 4 non-constant units -> 6 pairs, of which (0,1), (0,2), (1,2) have |corr| = 1
    assert out[0].item() == pytest.approx(3 / 6)
    assert out[1].item() == pytest.approx(1 / 6)  # only (x, 5x)
    assert out[2].item() == 0.0  # no varying units
