"""The floating-point weight formats GPUs serve: FP8, NVFP4 and MXFP4, as pure tensor functions.

A format rounds each weight onto its element grid after dividing by its group's scale:

- ``fp8``: e4m3 elements (max 448), one scale per output channel, fitted as max|w| / 448 and
  rounded up to bfloat16 (llm-compressor's FP8_DYNAMIC weights; its scale is float32).
- ``nvfp4``: e2m1 elements (0, 0.5, 1, 1.5, 2, 3, 4, 6), groups of 16 input columns, each group's
  scale an FP8 e4m3 number, over one FP32 scale per tensor. The tensor's scale
  ``g = 448 * 6 / max|W|`` puts the largest group's scale at e4m3's largest value; a group's
  stored scale is ``s = g * max|w_group| / 6`` in e4m3, and its elements are ``w / (s / g)``
  rounded (compressed-tensors' NVFP4 arithmetic, so a checkpoint decodes to what was evaluated).
- ``mxfp4``: e2m1 elements, groups of 32, each scale a power of two (e8m0):
  ``2 ** (floor(log2(max|w_group|)) - 2)``, the OCP MX rule that vLLM's reference follows (the
  largest element of a group may clip at 6).

A stored e4m3 scale is rounded to the nearest e4m3 value, as compressed-tensors and vLLM round
it: a group's largest weight may then clip at 6 by up to half of e4m3's step (6%), which costs
less than rounding every scale up (as the integers' are rounded up to bfloat16, whose step is
0.4%): with e4m3's step of 12.5%, rounding up coarsens every group's grid by 6% on average, and
SmolLM2's RTN perplexity goes from 137.2 to 148.8. The tensor scale is chosen so that no group's
scale exceeds 448 before GPTQ updates the weights. A group of zeros gets the smallest positive
scale, so a pruned weight stays zero.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sweep.compress.rtn import QuantGrid, round_up_to_scale_dtype

E4M3_MAX = 448.0
E2M1_MAX = 6.0
E4M3_TINY = 2.0**-9  # e4m3's smallest positive (subnormal) value
E8M0_EXPONENTS = (-127, 127)
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


@dataclass(frozen=True)
class FloatFormat:
    """A floating-point weight format: its element type, its groups (None: one scale per output
    channel), how its scales are stored, and its bits per weight, nominal (what TCr and kappa
    count) and with the scales (what the real and deploy ratios count)."""

    name: str
    element: str  # "e4m3" or "e2m1"
    group_size: int | None
    scale: str  # "bf16", "e4m3" (over an FP32 tensor scale) or "e8m0"
    nominal_bits: int
    # compressed-tensors decodes this format's values through bfloat16 (the fp4 formats unpack
    # into it) before the checkpoint's own dtype; False: straight into the checkpoint's dtype
    decodes_through_bf16: bool = False

    @property
    def element_max(self) -> float:
        return E4M3_MAX if self.element == "e4m3" else E2M1_MAX

    @property
    def tensor_scale(self) -> bool:
        """Whether the format keeps one FP32 scale per tensor over its group scales."""
        return self.scale == "e4m3"

    def bits_per_weight(self, cols: int) -> float:
        """Bits a weight takes with its share of the scales, in a row of ``cols`` inputs (the
        tensor scale, 32 bits per matrix, is left out: under 1e-5 bits per weight)."""
        scale_bits = {"bf16": 16, "e4m3": 8, "e8m0": 8}[self.scale]
        step = cols if self.group_size is None else self.group_size
        return self.nominal_bits + scale_bits * math.ceil(cols / step) / cols


FORMATS = {
    "fp8": FloatFormat("fp8", "e4m3", None, "bf16", 8),
    "nvfp4": FloatFormat("nvfp4", "e2m1", 16, "e4m3", 4, decodes_through_bf16=True),
    "mxfp4": FloatFormat("mxfp4", "e2m1", 32, "e8m0", 4, decodes_through_bf16=True),
}


def _e4m3_magnitudes() -> torch.Tensor:
    """e4m3's non-negative values in the order of their codes (bytes 0 to 0x7E; 0x7F is NaN)."""
    return torch.arange(0x7F, dtype=torch.uint8).view(torch.float8_e4m3fn).float()


@functools.cache
def _rounding_table(element: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every value of ``element`` (e2m1 or e4m3), negative to positive, and the boundaries
    between neighbours for ``torch.bucketize`` (an entry goes to the bucket of the boundaries
    below it), on ``device``. A value's magnitude code is its index among the non-negative ones;
    at a midpoint the tie goes to the even code, as a hardware cast rounds."""
    positive = torch.tensor(E2M1_VALUES) if element == "e2m1" else _e4m3_magnitudes()
    n = len(positive)
    values = torch.cat([-positive[1:].flip(0), positive])  # (2n - 1,)
    mids = (values[1:] + values[:-1]) / 2  # (2n - 2,), exact: few mantissa bits
    code = torch.arange(n - 1)  # the smaller magnitude's code, beside each positive mid
    # a positive mid goes up when the larger code is even; a negative one goes up (towards zero)
    # when the smaller code is
    goes_up = torch.cat([(code % 2 == 0).flip(0), (code + 1) % 2 == 0])
    below = torch.nextafter(mids, torch.full_like(mids, -math.inf))
    return values.to(device), torch.where(goes_up, below, mids).to(device)


def _round_to_table(x: torch.Tensor, element: str) -> torch.Tensor:
    """``x`` (float32) to the nearest ``element`` value, ties to the even code, beyond the
    largest value to it: one lookup (GPTQ calls this once per column)."""
    values, boundaries = _rounding_table(element, x.device)
    return values.take(torch.bucketize(x, boundaries))


def round_e2m1(x: torch.Tensor) -> torch.Tensor:
    """Each entry of ``x`` (float32) rounded to the nearest e2m1 value, ties to the even code,
    clamped to +-6."""
    return _round_to_table(x, "e2m1")


def round_e4m3(x: torch.Tensor) -> torch.Tensor:
    """Each entry of ``x`` rounded to the nearest FP8 e4m3 value (ties to even), clamped to
    +-448, as float32."""
    return x.float().clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn).float()


def e8m0_scale(amax: torch.Tensor) -> torch.Tensor:
    """MXFP4's power-of-two scale for groups whose largest magnitude is ``amax``:
    ``2 ** (floor(log2(amax)) - 2)``, the exponent within e8m0's range, as float32."""
    exponent = torch.floor(torch.log2(amax.float())) - math.floor(math.log2(E2M1_MAX))
    return torch.exp2(exponent.clamp(*E8M0_EXPONENTS))


def tensor_scale(w: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """NVFP4's FP32 tensor scale ``448 * 6 / max|w|`` (over the entries in ``mask``); 1 for a
    weight of zeros."""
    a = w.float().abs()
    if mask is not None:
        a = a * mask
    amax = float(a.max())
    if amax == 0.0 or not math.isfinite(amax):
        return 1.0
    return float(torch.tensor(E4M3_MAX * E2M1_MAX / amax, dtype=torch.float32))


def shared_tensor_scale(weights: list[torch.Tensor]) -> float:
    """One NVFP4 tensor scale for layers a runtime fuses into one (q/k/v, gate/up): the
    smallest of theirs, ``448 * 6`` over the largest magnitude among them, so that no group of
    any of them needs a scale above e4m3's largest."""
    return min(tensor_scale(w) for w in weights)


def float_scales(
    w: torch.Tensor,
    fmt: FloatFormat,
    mask: torch.Tensor | None = None,
    global_scale: float | None = None,
) -> torch.Tensor:
    """The scale that divides each row of one group ``w`` (rows, cols) before rounding, (rows, 1),
    fitted on the entries in ``mask``: for NVFP4 the stored e4m3 scale over ``global_scale``."""
    a = w.float().abs()
    if mask is not None:
        a = a * mask
    amax = a.amax(dim=1)
    if fmt.scale == "bf16":
        scale = amax / fmt.element_max
        scale = round_up_to_scale_dtype(torch.where(scale > 0, scale, torch.ones_like(scale)))
    elif fmt.scale == "e4m3":
        g = torch.tensor(global_scale if global_scale is not None else 1.0, dtype=torch.float32)
        scale = round_e4m3((g * (amax / fmt.element_max)).clamp(min=E4M3_TINY)) / g
    else:
        scale = e8m0_scale(torch.where(amax > 0, amax, torch.full_like(amax, 2.0**-125)))
    return scale.unsqueeze(1)


_CAST_FROM = 1 << 14  # entries from which the hardware cast rounds to e4m3 faster than a lookup


def round_element(x: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """``x`` (already divided by its scale) rounded onto the format's element grid. For e4m3
    the lookup and the cast give the same values: the lookup takes fewer operations on a column
    (GPTQ), the cast less time on a matrix (RTN)."""
    if fmt.element == "e4m3" and x.numel() >= _CAST_FROM:
        return round_e4m3(x)
    return _round_to_table(x, fmt.element)


def as_decoded(weight: torch.Tensor, fmt: FloatFormat, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` (on the format's grid) as its checkpoint in ``dtype`` decodes it, in
    ``weight``'s dtype: what a trial evaluates, so that what is evaluated is what is loaded."""
    decoded = weight.to(torch.bfloat16) if fmt.decodes_through_bf16 else weight
    return decoded.to(dtype).to(weight.dtype)


def column_quantizer(
    fmt: FloatFormat, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``float_quantize`` for ``fmt`` on ``device`` with its table looked up once: what GPTQ
    calls once per column, where each call's overhead counts."""
    values, boundaries = _rounding_table(fmt.element, device)

    def quantize(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return values.take(torch.bucketize(x / scale, boundaries)).mul_(scale)

    return quantize


def float_quantize(x: torch.Tensor, scale: torch.Tensor, fmt: FloatFormat) -> torch.Tensor:
    """``x`` rounded onto ``scale * element``: dequantized, float32."""
    return round_element(x.float() / scale, fmt).mul_(scale)  # a fresh tensor: in place


@dataclass
class FloatGrid:
    """The grid one weight (rows, cols) was rounded onto in a float format: each group's scale
    as it divides the weights (for NVFP4, the stored e4m3 scale over ``global_scale``), and, for
    activations with a calibrated scale, the scale over the layer's inputs."""

    fmt: FloatFormat
    scale: torch.Tensor  # (rows, n_groups), float32
    global_scale: float | None = None
    input_scale: float | None = None

    @property
    def bits(self) -> int:
        """The format's nominal bits (what a mixed allocation's grids are grouped by)."""
        return self.fmt.nominal_bits

    @classmethod
    def empty(
        cls,
        rows: int,
        cols: int,
        fmt: FloatFormat,
        global_scale: float | None = None,
        device: torch.device | str = "cpu",
    ) -> FloatGrid:
        groups = QuantGrid.n_groups(cols, fmt.group_size)
        return cls(fmt, torch.zeros((rows, groups), device=device), global_scale)

    def fits(self, rows: int, cols: int, spec: object) -> bool:
        """Whether this grid is one for a (rows, cols) weight quantized as ``spec`` (a
        ``QuantSpec``)."""
        groups = QuantGrid.n_groups(cols, self.fmt.group_size)
        return getattr(spec, "format", None) == self.fmt.name and self.scale.shape == (rows, groups)

    def put(self, col: int, cols: int, scale: torch.Tensor, zero: object = None) -> None:
        """Record the scale (rows, 1) of the group holding column ``col``."""
        g = col // (cols if self.fmt.group_size is None else self.fmt.group_size)
        self.scale[:, g] = scale[:, 0]

    def to(self, device: torch.device | str) -> FloatGrid:
        return FloatGrid(self.fmt, self.scale.to(device), self.global_scale, self.input_scale)

    def stored_scales(self) -> torch.Tensor:
        """The group scales as the checkpoint stores their values: NVFP4's e4m3 scale (this
        grid's scale times the tensor scale), MXFP4's power of two, FP8's bfloat16 value."""
        if self.fmt.tensor_scale:  # s / g times g: s up to float32 rounding, recovered exactly
            assert self.global_scale is not None
            return round_e4m3(self.scale * self.global_scale)
        return self.scale

    def elements(self, weight: torch.Tensor) -> torch.Tensor:
        """Every entry of ``weight`` (rows, cols) on this grid as its element value (float32)."""
        return round_element(weight.float() / self.per_column(weight.shape[1]), self.fmt)

    def per_column(self, cols: int) -> torch.Tensor:
        """Each column's scale, (rows, cols): its group's, repeated across the group."""
        step = cols if self.fmt.group_size is None else self.fmt.group_size
        return self.scale.repeat_interleave(step, dim=1)[:, :cols]


def rtn_float(
    weight: torch.Tensor,
    fmt: FloatFormat,
    mask: torch.Tensor | None = None,
    grid: FloatGrid | None = None,
    global_scale: float | None = None,
) -> torch.Tensor:
    """Round-to-nearest quantization of ``weight`` (out, in) in ``fmt``; returns dequantized
    weights in ``weight``'s dtype. With ``mask`` (Case B) scales are fitted on the kept weights
    and pruned ones stay zero; with ``grid`` each group's scale is recorded in it. NVFP4's tensor
    scale is ``global_scale`` when given (a fused group's), else fitted on the kept weights."""
    w = weight.float()
    cols = w.shape[1]
    g = None
    if fmt.tensor_scale:
        g = global_scale if global_scale is not None else tensor_scale(w, mask)
    if grid is not None:
        grid.global_scale = g
    step = cols if fmt.group_size is None else fmt.group_size
    if cols % step == 0:  # every group whole: all at once, a fit reducing each row alone
        rows, n = w.shape[0], cols // step
        blocks = w.reshape(rows * n, step)
        scale = float_scales(blocks, fmt, None if mask is None else mask.reshape(rows * n, step), g)
        out = float_quantize(blocks, scale, fmt).reshape(rows, cols)
        if grid is not None:
            grid.scale.copy_(scale.reshape(rows, n))
        if mask is not None:
            out *= mask
        return out.to(weight.dtype)
    out = torch.empty_like(w)
    for start in range(0, cols, step):
        block = w[:, start : start + step]
        block_mask = None if mask is None else mask[:, start : start + step]
        scale = float_scales(block, fmt, block_mask, g)
        out[:, start : start + step] = float_quantize(block, scale, fmt)
        if grid is not None:
            grid.put(start, cols, scale)
    if mask is not None:
        out *= mask
    return out.to(weight.dtype)
