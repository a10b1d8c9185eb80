"""The linear-VAE posterior-collapse closed form (symexp.theory_posterior) against the objective itself:
its stationarity, and the optimum that plain gradient descent finds in float64 at several beta."""
import pytest
import torch

from symexp import theory_posterior as tp

LAMBDA = torch.tensor([8.0, 4.0, 2.0, 1.0, 0.5, 0.25], dtype=torch.float64)  # data spectrum, d = 6
K = 4  # latents
NOISE_VAR = 0.7
# beta * noise_var = 0.7 * 2^i sits between consecutive eigenvalues, so the closed form predicts
# 4, 3, 2, 1, 0 active latents; "lambda > noise_var" (beta ignored) would say 4 every time, and
# "lambda > noise_var / beta" would say 4, 4, 4, 4, 4 too: the sweep tells them apart.
BETAS = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0], dtype=torch.float64)


@pytest.fixture(autouse=True)
def one_thread():
    """Thousands of tiny ops: a second thread only adds synchronisation (10x slower on a busy 2-core box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rotated_cov(seed=0):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    return q, q @ torch.diag(LAMBDA) @ q.T


def closed_form_parameters(q, betas):
    """W* = U_k diag(sqrt((lambda - s)_+)), V* = (W*^T W* + s I)^-1 W*^T, log D*, per member."""
    opt = tp.optimum(LAMBDA, K, betas, NOISE_VAR)
    W = q[:, :K] * opt["decoder_sq_norms"].sqrt()[:, None, :]
    s = (betas * NOISE_VAR)[:, None, None]
    V = torch.linalg.solve(W.transpose(1, 2) @ W + s * torch.eye(K, dtype=torch.float64), W.transpose(1, 2))
    return W, V, opt["encoder_var"].log(), opt


def test_active_count_is_the_beta_noise_threshold():
    assert tp.active_latents(LAMBDA, K, BETAS, NOISE_VAR).tolist() == [4, 3, 2, 1, 0]
    # only the first k latents exist, however small beta is
    assert tp.active_latents(LAMBDA, K, 1e-6, NOISE_VAR).tolist() == [4]
    # a latent exactly at the threshold is off (a tie in the loss)
    assert tp.active_latents(LAMBDA, K, 2.0 / NOISE_VAR, NOISE_VAR).tolist() == [2]


def test_closed_form_is_a_stationary_point_with_the_stated_loss():
    q, cov = rotated_cov()
    W, V, log_var, opt = closed_form_parameters(q, BETAS)
    params = [W.requires_grad_(), V.requires_grad_(), log_var.requires_grad_()]
    loss = tp.linear_vae_loss(W, V, log_var, cov, BETAS, NOISE_VAR)
    torch.testing.assert_close(loss, opt["loss"], rtol=0, atol=1e-12)
    for grad in torch.autograd.grad(loss.sum(), params):
        assert grad.abs().max() < 1e-12
    torch.testing.assert_close(tp.per_latent_kl(V, log_var, cov).detach(), opt["kl"], rtol=0, atol=1e-12)


def test_gradient_descent_finds_the_closed_form_at_every_beta_and_seed():
    """Plain GD (one step size per parameter block) from two random inits per beta, in float64."""
    q, cov = rotated_cov()
    betas = BETAS.repeat(2)  # members: 5 betas x 2 initialisations
    M = betas.shape[0]
    g = torch.Generator().manual_seed(1)
    W = (0.1 * torch.randn(M, 6, K, generator=g, dtype=torch.float64)).requires_grad_()
    V = (0.1 * torch.randn(M, K, 6, generator=g, dtype=torch.float64)).requires_grad_()
    log_var = torch.zeros(M, K, dtype=torch.float64, requires_grad=True)
    # Step sizes from the curvature of each block: W ~ 1/noise_var, V <= (lambda_1 + s) lambda_1 / noise_var,
    # log D = beta / 2 at its optimum.
    s = betas * NOISE_VAR
    steps = (0.5 * NOISE_VAR, (0.5 * NOISE_VAR / ((LAMBDA[0] + s) * LAMBDA[0]))[:, None, None], (0.5 / betas)[:, None])
    for _ in range(3000):
        loss = tp.linear_vae_loss(W, V, log_var, cov, betas, NOISE_VAR).sum()
        grads = torch.autograd.grad(loss, (W, V, log_var))
        with torch.no_grad():
            for p, grad, lr in zip((W, V, log_var), grads, steps):
                p -= lr * grad
    opt = tp.optimum(LAMBDA, K, betas, NOISE_VAR)
    with torch.no_grad():
        kl = tp.per_latent_kl(V, log_var, cov)
        found = tp.linear_vae_loss(W, V, log_var, cov, betas, NOISE_VAR)
    assert (kl > 1e-3).sum(dim=1).double().tolist() == tp.active_latents(LAMBDA, K, betas, NOISE_VAR).tolist()
    torch.testing.assert_close(kl.sort(dim=1, descending=True).values, opt["kl"], rtol=0, atol=1e-4)
    torch.testing.assert_close(found, opt["loss"], rtol=1e-7, atol=0)


@pytest.mark.parametrize(
    "args, match",
    [((torch.tensor([1.0, 2.0]), 1, 1.0, 1.0), "strictly decreasing"),
     ((LAMBDA, 7, 1.0, 1.0), "k"),
     ((LAMBDA, 2, 0.0, 1.0), "beta"),
     ((LAMBDA, 2, 1.0, -1.0), "noise_var")],
)
def test_bad_input_is_one_clear_error(args, match):
    with pytest.raises(ValueError, match=match):
        tp.active_latents(*args)
