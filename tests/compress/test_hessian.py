import torch

from sweep.compress.hessian import (
    accumulate_hessian,
    accumulate_sq_norms,
    inverse_hessian_cholesky,
    prepare,
)


def test_running_hessian_equals_the_mean_over_all_tokens():
    x = torch.randn(3, 10, 8, generator=torch.Generator().manual_seed(0))  # (batch, seq, in)
    h, n = None, 0
    for batch in x.split([1, 2]):
        h, n = accumulate_hessian(h, batch, n)
    flat = x.reshape(-1, 8)
    assert n == 30
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, 2 * flat.T @ flat / 30)


def test_sq_norms_are_the_mean_square_per_feature_and_half_the_hessian_diagonal():
    x = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(1))
    s, h, n = None, None, 0
    for batch in x.split(1):
        s, _ = accumulate_sq_norms(s, batch, n)
        h, n = accumulate_hessian(h, batch, n)
    torch.testing.assert_close(s, x.reshape(-1, 5).square().mean(0))
    torch.testing.assert_close(s, h.diagonal() / 2)


def test_dead_inputs_are_zeroed_and_the_hessian_kept_invertible():
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(2))
    x[:, 2] = 0
    h, _ = accumulate_hessian(None, x, 0)
    w, h2, dead = prepare(torch.ones(3, 6), h)
    assert dead.tolist() == [False, False, True, False, False, False]
    assert torch.all(w[:, 2] == 0) and h2[2, 2] == 1
    u = inverse_hessian_cholesky(h2)
    damped = h2 + 0.01 * h2.diagonal().mean() * torch.eye(6)
    torch.testing.assert_close(u.T @ u, torch.linalg.inv(damped), rtol=1e-4, atol=1e-5)
