"""Calibration statistics of one Linear layer's inputs, and the inverse-Hessian factor.

``H = 2/n sum_t x_t x_t^T`` (running mean over the n calibration tokens seen so far) is the
Hessian, with respect to each row of W, of the layer's mean squared output error
``||X W^T - X W_hat^T||^2 / n``;
GPTQ and SparseGPT need it. Wanda needs only ``mean_t x_tj^2`` per input feature j (its
``||X_j||_2`` up to a constant factor, which Wanda's per-row comparison ignores).
"""

from __future__ import annotations

import torch

# The engine's settings of GPTQ and SparseGPT, written into llm-compressor recipes and used by
# the benchmark's peer as they are here:
DAMPENING = 0.01  # added to the Hessian's diagonal, as a fraction of its mean
BLOCK_SIZE = 128  # columns per block: SparseGPT chooses its unstructured mask block by block
# Columns per lazy batch of updates in GPTQ and SparseGPT. The result is the same whatever the
# batch (up to float rounding); 32 does less rank-1 work per column than the reference's 128.
LAZY_BLOCK = 32


def _tokens(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, x.shape[-1]).float()  # (tokens, in)


def accumulate_hessian(
    hessian: torch.Tensor | None, x: torch.Tensor, n_seen: int
) -> tuple[torch.Tensor, int]:
    """Fold the inputs ``x`` (..., in) into the running mean ``H`` (in, in) of 2 x x^T.

    ``hessian`` may be None before the first batch. Returns (H, tokens seen so far), float32.
    """
    xt = _tokens(x)  # (tokens, in)
    n = n_seen + xt.shape[0]
    if hessian is None:
        hessian = torch.zeros(xt.shape[1], xt.shape[1], dtype=torch.float32, device=x.device)
    hessian = hessian * (n_seen / n) + (2.0 / n) * (xt.T @ xt)  # (in, in)
    return hessian, n


def accumulate_sq_norms(
    sq_norms: torch.Tensor | None, x: torch.Tensor, n_seen: int
) -> tuple[torch.Tensor, int]:
    """Fold ``x`` (..., in) into the running mean of x_j^2 per input feature j: (in,), float32."""
    xt = _tokens(x)  # (tokens, in)
    n = n_seen + xt.shape[0]
    if sq_norms is None:
        sq_norms = torch.zeros(xt.shape[1], dtype=torch.float32, device=x.device)
    sq_norms = sq_norms * (n_seen / n) + xt.square().sum(0) / n  # (in,)
    return sq_norms, n


def prepare(
    weight: torch.Tensor, hessian: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float32 copies of (weight, H) with dead inputs (never active) handled as the reference does.

    A dead input j has H_jj = 0: its weights cannot matter, so they are set to zero and H_jj to 1
    to keep H invertible. Returns (weight (out, in), H (in, in), dead (in,) bool).
    """
    w = weight.detach().float().clone()  # (out, in)
    h = hessian.detach().to(w.device, torch.float32).clone()  # (in, in)
    dead = h.diagonal() == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    return w, h, dead


def inverse_hessian_cholesky(hessian: torch.Tensor, damp: float = DAMPENING) -> torch.Tensor:
    """Upper Cholesky factor U of (H + lambda I)^-1 (in, in), lambda = ``damp`` * mean(diag H).

    If H + lambda I is not positive definite in float32, lambda grows tenfold (up to 5 times).
    """
    mean_diag = hessian.diagonal().mean()
    for attempt in range(6):
        h = hessian.clone()
        h.diagonal().add_(damp * 10**attempt * mean_diag)
        chol, info = torch.linalg.cholesky_ex(h)
        if int(info) == 0:
            inv = torch.cholesky_inverse(chol)
            upper, info = torch.linalg.cholesky_ex(inv, upper=True)
            if int(info) == 0:
                return upper
    raise ValueError("the Hessian is not positive definite even with 1e5 x the dampening")
