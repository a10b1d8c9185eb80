"""Neural-collapse metrics (symexp.metrics.collapse) on planted features, batched over members M."""
import math

import pytest
import torch

from symexp.metrics import collapse as nc

C, P, PER_CLASS = 5, 12, 8
LABELS = torch.arange(C).repeat_interleave(PER_CLASS)  # balanced, N = 40


def simplex_etf(scale=3.0, seed=0):
    """C class means forming a simplex ETF in R^P: centred, equal norms, cosines exactly -1/(C-1)."""
    g = torch.Generator().manual_seed(seed)
    basis, _ = torch.linalg.qr(torch.randn(P, C, generator=g, dtype=torch.float64))
    centring = torch.eye(C, dtype=torch.float64) - 1.0 / C
    return scale * math.sqrt(C / (C - 1)) * (basis @ centring).T  # [C, P]


def collapsed(means, offset=None):
    """Every sample exactly at its class mean (plus a shared offset): NC1 is 0 by construction."""
    H = means[LABELS]
    return (H if offset is None else H + offset).unsqueeze(0)


def random_features(M=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(M, C * PER_CLASS, P, generator=g, dtype=torch.float64)


def test_exactly_collapsed_features_have_zero_nc1_and_rank_c_minus_1():
    g = torch.Generator().manual_seed(2)
    generic_means = torch.randn(C, P, generator=g, dtype=torch.float64)
    H = torch.cat([collapsed(generic_means), collapsed(simplex_etf(), offset=torch.ones(P))])
    assert nc.nc1(H, LABELS, C).abs().max() < 1e-20
    assert nc.feature_rank(H).tolist() == [C - 1, C - 1]


def test_nc1_matches_the_pseudo_inverse_definition_and_shrinks_with_within_class_noise():
    H = random_features()
    means, mu_g = nc.class_means(H, LABELS, C)
    for m in range(H.shape[0]):
        within = H[m] - means[m][LABELS]
        sigma_w = within.T @ within / H.shape[1]
        centred = means[m] - mu_g[m]
        sigma_b = centred.T @ centred / C
        direct = torch.trace(sigma_w @ torch.linalg.pinv(sigma_b, hermitian=True)) / C
        torch.testing.assert_close(nc.nc1(H, LABELS, C)[m], direct, rtol=1e-10, atol=0)
    etf = collapsed(simplex_etf())
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(etf.shape, generator=g, dtype=torch.float64)
    values = nc.nc1(torch.cat([etf + 1.0 * noise, etf + 0.1 * noise, etf + 0.01 * noise]), LABELS, C)
    assert values[0] > values[1] > values[2] > 0
    # NC1 is quadratic in the within-class spread at fixed means (up to the means' own shift)
    assert values[1] / values[2] == pytest.approx(100, rel=0.05)


def test_simplex_etf_is_equinorm_and_equiangular_at_minus_one_over_c_minus_1():
    H = collapsed(simplex_etf())
    assert nc.equinorm(H, LABELS, C).item() < 1e-12
    torch.testing.assert_close(nc.mean_cosine(H, LABELS, C), torch.tensor([-1 / (C - 1)], dtype=torch.float64))
    assert nc.equiangularity(H, LABELS, C).item() < 1e-12
    assert nc.etf_error(H, LABELS, C).item() < 1e-12


def test_unequal_norms_or_angles_are_detected():
    means = simplex_etf()
    stretched = means.clone()
    stretched[0] *= 2.0  # breaks equal norms (and, through the re-centring, the angles)
    H = collapsed(stretched)
    assert nc.equinorm(H, LABELS, C).item() > 0.1
    assert nc.equiangularity(H, LABELS, C).item() > 0.01
    assert nc.etf_error(H, LABELS, C).item() > 0.05


def test_random_features_are_not_collapsed():
    H = random_features()
    assert (nc.nc1(H, LABELS, C) > 1).all()
    assert (nc.equinorm(H, LABELS, C) > 0.02).all()
    assert (nc.equiangularity(H, LABELS, C) > 0.05).all()
    assert (nc.etf_error(H, LABELS, C) > 0.1).all()
    assert nc.feature_rank(H).tolist() == [P] * 3


def test_nc3_self_duality_and_nc4_agreement():
    means = simplex_etf()
    H = torch.cat([collapsed(means)] * 3)
    g = torch.Generator().manual_seed(4)
    dual = 0.5 * means  # classifier rows proportional to the centred class means
    W = torch.stack([dual, torch.randn(C, P, generator=g, dtype=torch.float64), dual[[1, 0, 2, 3, 4]]])
    errors = nc.nc3(H, LABELS, W, C)
    assert errors[0] < 1e-12 and errors[1] > 0.3 and errors[2] > 0.3
    logits = H @ W.transpose(1, 2)
    agreement = nc.nc4_agreement(H, LABELS, logits, C)
    # the self-dual classifier predicts the nearest mean; swapping rows 0 and 1 swaps two classes' predictions
    assert agreement[0] == 1.0
    assert agreement[2] == pytest.approx(1 - 2 / C)


def test_feature_rank_counts_planted_rank():
    g = torch.Generator().manual_seed(5)
    factors = [torch.randn(40, r, generator=g, dtype=torch.float64) @ torch.randn(r, P, generator=g, dtype=torch.float64)
               for r in (1, 3, 7)]
    assert nc.feature_rank(torch.stack(factors)).tolist() == [1, 3, 7]


def test_labels_per_member_are_used_per_member():
    H = torch.cat([collapsed(simplex_etf())] * 2)
    shuffled = LABELS[torch.randperm(LABELS.shape[0], generator=torch.Generator().manual_seed(6))]
    values = nc.nc1(H, torch.stack([LABELS, shuffled]), C)
    assert values[0] < 1e-20 and values[1] > 1


@pytest.mark.parametrize(
    "labels, match",
    [(LABELS.float(), "integer"), (LABELS[:-1], r"\[N\]"), (LABELS + 1, r"\[0, 5\)"),
     (torch.zeros_like(LABELS), "every one of the 5 classes")],
)
def test_bad_labels_are_one_clear_error(labels, match):
    with pytest.raises(ValueError, match=match):
        nc.nc1(random_features(M=1), labels, C)
