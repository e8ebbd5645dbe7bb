"""Round-to-nearest quantization, per output channel or in groups of input columns."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCALE_DTYPE = torch.bfloat16  # the precision at which scales are fitted, as the export stores them


@dataclass(frozen=True)
class QuantSpec:
    """The shape of a quantization grid: bit-width, group of input columns (None = the whole row,
    one scale per output channel), symmetric or not, and the format of its values: ``int``, or a
    float format of ``sweep.compress.formats`` (which fixes the other three). ``tensor_scale``
    fixes NVFP4's FP32 tensor scale (one for a fused group of layers, which vLLM serves with
    one); None fits it on the weight."""

    bits: int
    group_size: int | None = None
    symmetric: bool = False
    format: str = "int"
    tensor_scale: float | None = None


@dataclass
class QuantGrid:
    """The grid one quantized weight (rows, cols) was rounded onto, as the export stores it.

    Group g covers the input columns ``[g * step, (g + 1) * step)``, with ``step`` the group
    size (the whole row when ``group_size`` is None). A weight in group g of row r is
    ``scale[r, g] * (k - zero[r, g])`` with the code k in [0, 2^bits - 1]; ``zero`` holds
    integers in that range (2^(bits-1) for symmetric grids), as float32.
    """

    scale: torch.Tensor  # (rows, n_groups), float32 holding 16-bit values
    zero: torch.Tensor  # (rows, n_groups), float32 holding integers in [0, 2^bits - 1]
    bits: int
    group_size: int | None
    symmetric: bool

    @staticmethod
    def n_groups(cols: int, group_size: int | None) -> int:
        return 1 if group_size is None else math.ceil(cols / group_size)

    @classmethod
    def empty(
        cls, rows: int, cols: int, spec: QuantSpec, device: torch.device | str = "cpu"
    ) -> QuantGrid:
        """A grid for a (rows, cols) weight, to be filled group by group by a quantizer."""
        shape = (rows, cls.n_groups(cols, spec.group_size))
        return cls(
            scale=torch.zeros(shape, device=device),
            zero=torch.zeros(shape, device=device),
            bits=spec.bits,
            group_size=spec.group_size,
            symmetric=spec.symmetric,
        )

    def fits(self, rows: int, cols: int, spec: QuantSpec) -> bool:
        """Whether this grid is one for a (rows, cols) weight quantized as ``spec``."""
        shape = (rows, self.n_groups(cols, spec.group_size))
        same = QuantSpec(self.bits, self.group_size, self.symmetric) == spec
        return same and tuple(self.scale.shape) == shape == tuple(self.zero.shape)

    def put(self, col: int, cols: int, scale: torch.Tensor, zero: torch.Tensor) -> None:
        """Record the grid (``scale``, ``zero``: (rows, 1)) of the group holding column ``col``."""
        g = col // (cols if self.group_size is None else self.group_size)
        self.scale[:, g] = scale[:, 0]
        self.zero[:, g] = zero[:, 0]

    def to(self, device: torch.device | str) -> QuantGrid:
        return QuantGrid(
            self.scale.to(device), self.zero.to(device), self.bits, self.group_size, self.symmetric
        )

    def _per_column(self, t: torch.Tensor, cols: int) -> torch.Tensor:
        step = cols if self.group_size is None else self.group_size
        return t.repeat_interleave(step, dim=1)[:, :cols]  # (rows, cols)

    def codes(self, weight: torch.Tensor) -> torch.Tensor:
        """The integer code k of every entry of ``weight`` (rows, cols) on this grid, as uint8."""
        cols = weight.shape[1]
        scale, zero = self._per_column(self.scale, cols), self._per_column(self.zero, cols)
        return codes(weight.float(), scale, zero, self.bits).to(torch.uint8)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """``scale * (codes - zero)``, per column's group: the weight (rows, cols), float32."""
        cols = codes.shape[1]
        scale, zero = self._per_column(self.scale, cols), self._per_column(self.zero, cols)
        return scale * (codes.float() - zero)


def round_up_to_scale_dtype(x: torch.Tensor) -> torch.Tensor:
    """``x`` (float32, positive) rounded up to the nearest ``SCALE_DTYPE`` value, as float32."""
    y = x.to(SCALE_DTYPE)
    y = torch.where(y.float() < x, torch.nextafter(y, torch.full_like(y, torch.inf)), y)
    return y.float()


def quant_params(
    w: torch.Tensor, bits: int, symmetric: bool, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero-point for each row of ``w`` (rows, cols), fitted on the entries in ``mask``.

    The range always contains 0, so a zero weight stays exactly zero after quantization. The
    scale is rounded to bfloat16 before the zero-point is fitted: the export stores scales in 16
    bits, so the grid is fitted at that precision and the evaluated model is exactly what the
    export writes. It is rounded up, so the grid still spans the fitted range (nothing is
    clipped) and the rounding error stays within half a step.
    """
    w = w.float()
    if mask is not None:
        lo = torch.where(mask, w, torch.zeros_like(w)).amin(dim=1)
        hi = torch.where(mask, w, torch.zeros_like(w)).amax(dim=1)
    else:
        lo, hi = w.amin(dim=1), w.amax(dim=1)
    lo, hi = lo.clamp(max=0), hi.clamp(min=0)
    qmax = 2**bits - 1
    scale = 2 * torch.maximum(-lo, hi) / qmax if symmetric else (hi - lo) / qmax
    scale = round_up_to_scale_dtype(torch.where(scale > 0, scale, torch.ones_like(scale)))
    if symmetric:
        zero = torch.full_like(scale, (qmax + 1) / 2)
    else:
        zero = torch.round(-lo / scale).clamp(0, qmax)
    return scale.unsqueeze(1), zero.unsqueeze(1)  # (rows, 1) each


def codes(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """The code k in [0, 2^bits - 1] of each entry of ``w`` on the grid ``scale * (k - zero)``,
    as floats."""
    return torch.clamp(torch.round(w / scale) + zero, 0, 2**bits - 1)


def quantize(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int) -> torch.Tensor:
    """Round ``w`` onto the grid ``scale * (k - zero)``, k in [0, 2^bits - 1]; dequantized.

    GPTQ and SparseGPT call this once per column, so it works in place on its own result.
    """
    return codes(w, scale, zero, bits).sub_(zero).mul_(scale)


def rtn_quantize(
    weight: torch.Tensor,
    bits: int,
    group_size: int | None,
    symmetric: bool,
    mask: torch.Tensor | None = None,
    grid: QuantGrid | None = None,
) -> torch.Tensor:
    """Round-to-nearest quantization of ``weight`` (out, in); returns dequantized weights.

    With ``mask`` (Case B), scales are fitted on the kept weights and pruned ones stay zero.
    With ``grid`` (see ``QuantGrid.empty``), each group's scale and zero-point are recorded in it.
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
        if grid is not None:
            grid.put(start, cols, scale, zero)
    if mask is not None:
        out *= mask
    return out.to(weight.dtype)
