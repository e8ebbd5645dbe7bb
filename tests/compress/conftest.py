import pytest
import torch

from sweep.compress.hessian import accumulate_hessian, accumulate_sq_norms


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every engine test runs on one thread (see ``one_thread`` in tests/conftest.py)."""


def calibration_like(tokens=1024, d_in=128, d_out=64, seed=0):
    """Inputs with correlated features and a few outlier features (as LLM activations have),
    and a random weight: (x (tokens, in), w (out, in))."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(tokens, d_in, generator=g)
    x = z @ (torch.randn(d_in, d_in, generator=g) / d_in**0.5) + 0.3 * z
    scale = torch.ones(d_in)
    scale[torch.randperm(d_in, generator=g)[:6]] = 10.0
    w = torch.randn(d_out, d_in, generator=g) * 0.05
    return x * scale, w


class Layer:
    def __init__(self, seed=0):
        self.x, self.w = calibration_like(seed=seed)
        self.hessian, _ = accumulate_hessian(None, self.x, 0)
        self.sq_norms, _ = accumulate_sq_norms(None, self.x, 0)

    def error(self, w_hat):
        """Relative output error ||X W^T - X W_hat^T|| / ||X W^T||."""
        ref = self.x @ self.w.T
        return float((ref - self.x @ w_hat.T).norm() / ref.norm())


@pytest.fixture(scope="session")
def layer():
    return Layer()
