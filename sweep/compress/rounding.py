"""How the column-by-column quantizers (GPTQ, SparseGPT's joint pass) round a weight: fit one
group's grid on its current weights, then round a column onto it, for an integer grid or a float
format alike. The error feedback around them does not depend on which."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sweep.compress.formats import (
    FORMATS,
    FloatGrid,
    column_quantizer,
    float_scales,
    tensor_scale,
)
from sweep.compress.rtn import QuantGrid, QuantSpec, quant_params, quantize

Fit = Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor]]
Round = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Rounding:
    """``fit(group (rows, g), kept (rows, g) or None) -> (scale, zero)``, each (rows, 1), and
    ``round(column (rows,), scale (rows,), zero) -> the column on the grid``."""

    fit: Fit
    round: Round


def rounding(
    spec: QuantSpec,
    weight: torch.Tensor,
    keep: torch.Tensor | None = None,
    grid: QuantGrid | FloatGrid | None = None,
) -> Rounding:
    """The rounding ``spec`` asks for on ``weight`` (out, in). A float format with a tensor scale
    (NVFP4) takes ``spec.tensor_scale`` or fits it now on the kept entries of ``weight``, and
    records it in ``grid``."""
    if spec.format == "int":
        bits, symmetric = spec.bits, spec.symmetric
        return Rounding(
            lambda block, mask: quant_params(block, bits, symmetric, mask),
            lambda x, scale, zero: quantize(x, scale, zero, bits),
        )
    fmt = FORMATS[spec.format]
    g = None
    if fmt.tensor_scale:
        g = spec.tensor_scale if spec.tensor_scale is not None else tensor_scale(weight, keep)
    if isinstance(grid, FloatGrid):
        grid.global_scale = g
    no_zero = torch.zeros((1, 1))
    quantize_column = column_quantizer(fmt, weight.device)
    return Rounding(
        lambda block, mask: (float_scales(block, fmt, mask, g), no_zero),
        lambda x, scale, zero: quantize_column(x, scale),
    )


def empty_grid(
    rows: int, cols: int, spec: QuantSpec, device: torch.device | str = "cpu"
) -> QuantGrid | FloatGrid:
    """A grid for a (rows, cols) weight quantized as ``spec``, to be filled by a quantizer."""
    if spec.format == "int":
        return QuantGrid.empty(rows, cols, spec, device)
    return FloatGrid.empty(rows, cols, FORMATS[spec.format], device=device)
