"""SparseGPT (Frantar & Alistarh 2023): prune column by column and let the inverse Hessian move
the weights not yet visited to absorb the error (lazy batch updates, as GPTQ).

Unstructured: the mask of each block of ``block_size`` columns is chosen at the block's start by
the OBS saliency w^2 / [H^-1]_jj^2 over all its rows (the reference's adaptive mask), with the
number pruned per block fixed so the layer ends at exactly ``round(sparsity * numel)`` zeros.
N:M: each run of M columns keeps its N most salient weights per row, chosen when reached.

With a ``quantizer`` every kept weight is also rounded onto an RTN grid as its column is visited,
and that error is fed forward too: pruning and quantization in one pass (Optimal Brain
Compression). Each group's grid is fitted, when the group is reached, on its current weights.

Updates inside a block are batched too, every ``lazy`` columns (32): the same arithmetic as
updating after each column, reordered, with far less work per column on a CPU.
"""

from __future__ import annotations

import torch

from sweep.compress.formats import FloatGrid
from sweep.compress.hessian import (
    BLOCK_SIZE,
    DAMPENING,
    LAZY_BLOCK,
    inverse_hessian_cholesky,
    prepare,
)
from sweep.compress.magnitude import drop_lowest, nm_mask
from sweep.compress.rounding import rounding
from sweep.compress.rtn import QuantGrid, QuantSpec


def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float,
    nm: tuple[int, int] | None = None,
    quantizer: QuantSpec | None = None,
    block_size: int = BLOCK_SIZE,
    damp: float = DAMPENING,
    grid: QuantGrid | FloatGrid | None = None,
    lazy: int = LAZY_BLOCK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune (and optionally quantize) ``weight`` (out, in) with the input Hessian (in, in).

    Returns (new weight in ``weight``'s dtype, keep-mask (out, in)); pruned weights are exactly 0.
    With a ``quantizer`` and a ``grid`` (see ``QuantGrid.empty``), each group's scale and
    zero-point are recorded in the grid.
    """
    w, h, _ = prepare(weight, hessian)  # (out, in), (in, in)
    rows, cols = w.shape
    if nm is not None:
        n, m = nm
        if cols % m:
            raise ValueError(f"an {n}:{m} pattern needs the input size ({cols}) divisible by {m}")
        block_size = m * max(1, block_size // m)  # an N:M run never straddles two blocks
    gs = cols if quantizer is None or quantizer.group_size is None else quantizer.group_size
    hinv = inverse_hessian_cholesky(h, damp)  # (in, in), upper
    grid_rounding = None if quantizer is None else rounding(quantizer, w, None, grid)

    out = torch.zeros_like(w)  # (out, in)
    keep = torch.ones_like(w, dtype=torch.bool)  # (out, in)
    for b0 in range(0, cols, block_size):
        b1 = min(b0 + block_size, cols)
        w1 = w[:, b0:b1].clone()  # (out, B)
        err1 = torch.zeros_like(w1)  # (out, B)
        hinv1 = hinv[b0:b1, b0:b1]  # (B, B)
        d1 = hinv1.diagonal()  # (B,)
        keep1 = keep[:, b0:b1]  # (out, B), a view
        if nm is None:
            n_drop = round(sparsity * rows * b1) - round(sparsity * rows * b0)
            keep1.copy_(drop_lowest(w1.square() / d1.square()[None, :], n_drop))
        diag = d1.tolist()
        sub = lazy if nm is None else nm[1] * max(1, lazy // nm[1])
        for s0 in range(0, b1 - b0, sub):  # lazy updates within the block too (less work)
            s1 = min(s0 + sub, b1 - b0)
            for i in range(s0, s1):  # one op saved here is thousands per model
                col = b0 + i
                if nm is not None and i % m == 0:
                    saliency = w1[:, i : i + m].square() / d1[i : i + m].square()[None, :]
                    keep1[:, i : i + m] = nm_mask(saliency, n, m)
                x = w1[:, i]  # (out,)
                qc = x * keep1[:, i]  # (out,)
                if grid_rounding is not None:
                    if col % gs == 0:
                        ahead = torch.cat([w1[:, i:], w[:, b1:]], dim=1)[:, :gs]  # (out, gs)
                        scale, zero = grid_rounding.fit(ahead, None)
                        s_, z_ = scale[:, 0], zero[..., 0]  # (out,)
                        if grid is not None:
                            grid.put(col, cols, scale, zero)
                    qc = grid_rounding.round(qc, s_, z_)
                err = (x - qc).div_(diag[i])  # (out,)
                w1[:, i:s1].addr_(err, hinv1[i, i:s1], alpha=-1.0)
                err1[:, i] = err
                out[:, col] = qc
            w1[:, s1:] -= err1[:, s0:s1] @ hinv1[s0:s1, s1:]
        w[:, b1:] -= err1 @ hinv[b0:b1, b1:]  # lazy update of the later columns
    return out.to(weight.dtype), keep
