"""Round-to-nearest quantization, per output channel or in groups of input columns."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class QuantSpec:
    """The shape of a quantization grid: bit-width, group of input columns (None = the whole row,
    one scale per output channel), symmetric or not."""

    bits: int
    group_size: int | None = None
    symmetric: bool = False


def quant_params(
    w: torch.Tensor, bits: int, symmetric: bool, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero-point for each row of ``w`` (rows, cols), fitted on the entries in ``mask``.

    The range always contains 0, so a zero weight stays exactly zero after quantization.
    """
    w = w.float()
    if mask is not None:
        lo = torch.where(mask, w, torch.zeros_like(w)).amin(dim=1)
        hi = torch.where(mask, w, torch.zeros_like(w)).amax(dim=1)
    else:
        lo, hi = w.amin(dim=1), w.amax(dim=1)
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    qmax = 2**bits - 1
    if symmetric:
        bound = torch.maximum(-lo, hi)
        scale = 2 * bound / qmax
        zero = torch.full_like(scale, (qmax + 1) / 2)
    else:
        scale = (hi - lo) / qmax
        zero = torch.round(-lo / scale.clamp(min=1e-12))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return scale.unsqueeze(1), zero.unsqueeze(1)  # (rows, 1) each


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Round ``w`` onto the grid ``scale * (k - zero)``, k in [0, 2^bits - 1]; dequantized."""
    q = torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)
    return scale * (q - zero)


def rtn_quantize(
    weight: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Round-to-nearest quantization of ``weight`` (out, in); returns dequantized weights.

    With ``mask`` (Case B), scales are fitted on the kept weights and pruned ones stay zero.
    """
    w = weight.float()
    out = torch.empty_like(w)
    cols = w.shape[1]
    step = cols if group_size is None else group_size
    for start in range(0, cols, step):
        block = w[:, start : start + step]
        block_mask = None if mask is None else mask[:, start : start + step]
        scale, zero = quant_params(block, bits, symmetric, block_mask)
        out[:, start : start + step] = quantize(block, scale, zero, bits)
    if mask is not None:
        out *= mask
    return out.to(weight.dtype)
