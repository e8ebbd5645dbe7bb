"""GPTQ (Frantar et al. 2022): quantize column by column, feeding each column's rounding error
forward to the columns not yet quantized through the inverse Hessian (lazy batch updates).

The grid is RTN's (``rtn.quant_params``/``rtn.quantize``), so both quantizers share one format;
with a float format (``formats.FloatFormat``) it is that format's (``formats.float_scales``/
``formats.float_quantize``): the error feedback does not depend on the grid.
Groups are runs of ``group_size`` consecutive input columns in the weight's own order. With
``act_order`` columns are *visited* by decreasing H_jj but the groups stay those contiguous runs
("static groups": each group's grid is fitted on the weights before any update), so the result
needs no g_idx and exports like any grouped weight.
"""

from __future__ import annotations

import torch

from sweep.compress.formats import FloatFormat, FloatGrid
from sweep.compress.hessian import DAMPENING, LAZY_BLOCK, inverse_hessian_cholesky, prepare
from sweep.compress.rounding import Fit, rounding
from sweep.compress.rtn import QuantGrid, QuantSpec


def fit_groups(
    fit: Fit, w: torch.Tensor, keep: torch.Tensor, gs: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each group's grid (scale, zero), each (rows, 1), fitted on the weights as they are: one
    call for all groups when they are whole (a fit reduces each row alone), else one per group."""
    rows, cols = w.shape
    if cols % gs:
        return [fit(w[:, g : g + gs], keep[:, g : g + gs]) for g in range(0, cols, gs)]
    n = cols // gs
    scale, zero = fit(w.reshape(rows * n, gs), keep.reshape(rows * n, gs))  # row-major groups
    scale = scale.reshape(rows, n)
    zero = zero.reshape(rows, n) if zero.numel() == rows * n else zero.expand(rows, n)
    return [(scale[:, g : g + 1], zero[:, g : g + 1]) for g in range(n)]


def gptq_quantize(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    bits: int,
    group_size: int | None = None,
    symmetric: bool = False,
    act_order: bool = False,
    mask: torch.Tensor | None = None,
    block_size: int = LAZY_BLOCK,
    damp: float = DAMPENING,
    grid: QuantGrid | FloatGrid | None = None,
    fmt: FloatFormat | None = None,
    tensor_scale: float | None = None,
) -> torch.Tensor:
    """GPTQ-quantize ``weight`` (out, in) with the input Hessian ``hessian`` (in, in).

    With ``mask`` (out, in; True = kept, Case B) pruned weights end exactly zero, each grid is
    fitted on the kept weights of its group, and a pruned weight's error is not fed forward (the
    updates it received are dropped). With ``grid`` (see ``QuantGrid.empty``) each group's scale
    and zero-point are recorded in it. With ``fmt`` the weight is rounded onto that float format
    (``bits``, ``group_size`` and ``symmetric`` are the format's); NVFP4's tensor scale is
    ``tensor_scale`` (a fused group's) or fitted on the weight before any update. Returns the
    dequantized weight, in ``weight``'s dtype.
    """
    w, h, _ = prepare(weight, hessian)  # (out, in), (in, in)
    cols = w.shape[1]
    keep = torch.ones_like(w, dtype=torch.bool) if mask is None else mask.to(w.device).bool()
    w *= keep
    if fmt is not None:
        bits, group_size, symmetric = fmt.nominal_bits, fmt.group_size, True
    spec = QuantSpec(bits, group_size, symmetric, "int" if fmt is None else fmt.name, tensor_scale)
    grid_rounding = rounding(spec, w, keep, grid)
    fit, rounded = grid_rounding.fit, grid_rounding.round
    gs = cols if group_size is None else group_size

    perm = None
    static: list[tuple[torch.Tensor, torch.Tensor]] = []
    if act_order:
        static = fit_groups(fit, w, keep, gs)
        if grid is not None:
            for g, (scale, zero) in zip(range(0, cols, gs), static, strict=True):
                grid.put(g, cols, scale, zero)
        perm = torch.argsort(h.diagonal(), descending=True, stable=True)  # (in,)
        w, h, keep = w[:, perm], h[perm][:, perm], keep[:, perm]
        group_of = (perm // gs).tolist()
    hinv = inverse_hessian_cholesky(h, damp)  # (in, in), upper

    masked = mask is not None
    q = torch.zeros_like(w)  # (out, in)
    for b0 in range(0, cols, block_size):
        b1 = min(b0 + block_size, cols)
        w1 = w[:, b0:b1].clone()  # (out, B)
        err1 = torch.zeros_like(w1)  # (out, B)
        hinv1 = hinv[b0:b1, b0:b1]  # (B, B)
        diag = hinv1.diagonal().tolist()
        # the column loop runs once per input feature: one op saved here is thousands per model
        for i in range(b1 - b0):
            col = b0 + i
            if perm is not None:
                scale, zero = static[group_of[col]]
                s1, z1 = scale[:, 0], zero[..., 0]  # (out,)
            elif col % gs == 0:  # fit the group's grid on its current (updated) weights
                ahead = torch.cat([w1[:, i:], w[:, b1:]], dim=1)[:, :gs]  # (out, gs)
                scale, zero = fit(ahead, keep[:, col : col + gs])
                s1, z1 = scale[:, 0], zero[..., 0]
                if grid is not None:
                    grid.put(col, cols, scale, zero)
            x = w1[:, i]  # (out,)
            qc = rounded(x, s1, z1)  # (out,)
            if masked:
                qc *= keep[:, col]
            err = (x - qc).div_(diag[i])  # (out,)
            if masked:
                err *= keep[:, col]
            w1[:, i:].addr_(err, hinv1[i, i:], alpha=-1.0)
            err1[:, i] = err
            q[:, col] = qc
        w[:, b1:] -= err1 @ hinv[b0:b1, b1:]  # lazy update of the later columns

    if perm is not None:
        q = q[:, torch.argsort(perm)]
    return q.to(weight.dtype)
