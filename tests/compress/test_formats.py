"""The float formats' kernels: every value on the format's grid, scales representable in their
own formats, RTN equal to compressed-tensors' arithmetic given the same scales, GPTQ below RTN on
each grid, and Case B keeping every pruned zero."""

import pytest
import torch

from sweep.compress.formats import (
    E2M1_VALUES,
    FORMATS,
    FloatGrid,
    e8m0_scale,
    float_scales,
    round_e2m1,
    round_e4m3,
    rtn_float,
    tensor_scale,
)
from sweep.compress.gptq import gptq_quantize
from sweep.compress.sparsegpt import sparsegpt_prune

from .conftest import Layer

E4M3 = torch.arange(256, dtype=torch.uint8).view(torch.float8_e4m3fn).float()
E4M3_FINITE = E4M3[torch.isfinite(E4M3)]


def _on_e4m3(x: torch.Tensor) -> bool:
    return bool(torch.isin(x.flatten(), E4M3_FINITE).all())


def _on_e2m1(x: torch.Tensor) -> bool:
    grid = torch.tensor(E2M1_VALUES)
    return bool(torch.isin(x.abs().flatten(), grid).all())


def test_e2m1_rounds_to_the_nearest_value_ties_to_the_even_code():
    grid = torch.tensor(E2M1_VALUES)
    x = torch.linspace(-7, 7, 2801)
    q = round_e2m1(x)
    assert _on_e2m1(q)
    clamped = x.clamp(-6, 6)
    nearest = (clamped.abs()[:, None] - grid[None]).abs().min(dim=1).values
    assert torch.equal((q - clamped).abs(), nearest) and torch.equal(
        q.sign() * x.sign() >= 0, torch.ones_like(x, dtype=torch.bool)
    )
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    assert round_e2m1(ties).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0]
    assert round_e2m1(-ties).tolist() == [-0.0, -1.0, -1.0, -2.0, -2.0, -4.0, -4.0]


def test_e2m1_equals_compressed_tensors_rounding():
    from compressed_tensors.quantization.utils.fp4_utils import cast_to_fp4

    x = torch.randn(4096) * 3
    x[:7] = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    assert torch.equal(round_e2m1(x), cast_to_fp4(x.clone()))


def test_nvfp4_group_scales_round_to_the_nearest_e4m3_value_as_the_runtime_does():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 256, generator=g) * 0.02
    w[0, :16] = 0.0  # a group of zeros: the smallest positive scale
    gs = tensor_scale(w)
    stored = float_scales(w.reshape(-1, 16), FORMATS["nvfp4"], None, gs) * gs  # (groups, 1)
    assert _on_e4m3(stored) and stored[0].item() == 2.0**-9
    wanted = w.reshape(-1, 16).abs().amax(dim=1, keepdim=True)[1:] * gs / 6
    below, above = _e4m3_neighbours(wanted)
    nearest = torch.where(wanted - below <= above - wanted, below, above)
    assert torch.allclose(stored[1:], nearest, rtol=1e-6, atol=0)
    assert stored.max().item() == 448.0  # the largest group at e4m3's largest value


def _e4m3_neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    values = E4M3_FINITE[E4M3_FINITE >= 0].unique().sort().values
    i = torch.searchsorted(values, x.clamp(max=448), right=True).clamp(max=len(values) - 1)
    return values[(i - 1).clamp(min=0)], values[i]


def test_e8m0_scales_are_powers_of_two_that_map_the_group_max_to_4_to_8():
    amax = torch.rand(1000) * 10 + 1e-3
    s = e8m0_scale(amax)
    assert torch.equal(torch.exp2(torch.log2(s).round()), s)
    assert ((amax / s >= 4) & (amax / s < 8)).all()


@pytest.mark.parametrize("name", ["fp8", "nvfp4", "mxfp4"])
def test_rtn_puts_every_value_on_its_grid_and_scales_in_their_formats(layer, name):
    fmt = FORMATS[name]
    grid = FloatGrid.empty(*layer.w.shape, fmt)
    q = rtn_float(layer.w, fmt, grid=grid)
    elements = grid.elements(q)
    assert (_on_e4m3 if fmt.element == "e4m3" else _on_e2m1)(elements)
    step = layer.w.shape[1] if fmt.group_size is None else fmt.group_size
    scale = grid.scale.repeat_interleave(step, dim=1)
    assert torch.equal(elements * scale, q)  # the weight is element * scale, exactly
    stored = grid.stored_scales()
    if fmt.scale == "e4m3":
        assert _on_e4m3(stored) and stored.max() <= 448
        expected = torch.tensor(448 * 6) / layer.w.abs().max()
        assert grid.global_scale == pytest.approx(float(expected), rel=1e-6)
    elif fmt.scale == "e8m0":
        assert torch.equal(torch.exp2(torch.log2(stored).round()), stored)
    else:
        assert torch.equal(stored.bfloat16().float(), stored)
    assert 0 < (q - layer.w).abs().max() < layer.w.abs().max()


def _peer_rtn(w: torch.Tensor, name: str, scale: torch.Tensor, g: float | None) -> torch.Tensor:
    """compressed-tensors' fake quantization of ``w`` with our scales (per group, as it stores
    them) and NVFP4's tensor scale."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    strategy = {"fp8": "channel", "nvfp4": "tensor_group", "mxfp4": "group"}[name]
    fmt = FORMATS[name]
    args = QuantizationArgs(
        num_bits=fmt.nominal_bits, type="float", symmetric=True, strategy=strategy,
        group_size=fmt.group_size,
    )  # fmt: skip
    global_scale = None if g is None else torch.tensor([g])
    stored = scale if g is None else round_e4m3(scale * g)
    return fake_quantize(w, stored, torch.zeros_like(stored), args, global_scale=global_scale)


@pytest.mark.parametrize("name", ["fp8", "nvfp4", "mxfp4"])
def test_rtn_is_compressed_tensors_arithmetic_with_our_scales(layer, name):
    fmt = FORMATS[name]
    grid = FloatGrid.empty(*layer.w.shape, fmt)
    ours = rtn_float(layer.w, fmt, grid=grid)
    peer = _peer_rtn(layer.w, name, grid.scale, grid.global_scale)
    assert torch.allclose(ours, peer, rtol=0, atol=1e-7 * float(layer.w.abs().max()))


@pytest.mark.parametrize("name", ["fp8", "nvfp4", "mxfp4"])
@pytest.mark.parametrize("act_order", [False, True])
def test_gptq_error_is_below_rtns_on_each_grid_and_stays_on_it(layer, name, act_order):
    fmt = FORMATS[name]
    grid = FloatGrid.empty(*layer.w.shape, fmt)
    q = gptq_quantize(layer.w, layer.hessian, 0, act_order=act_order, grid=grid, fmt=fmt)
    assert (_on_e4m3 if fmt.element == "e4m3" else _on_e2m1)(grid.elements(q))
    step = layer.w.shape[1] if fmt.group_size is None else fmt.group_size
    assert torch.equal(grid.elements(q) * grid.scale.repeat_interleave(step, dim=1), q)
    rtn = layer.error(rtn_float(layer.w, fmt))
    assert layer.error(q) < 0.9 * rtn


@pytest.mark.parametrize("name", ["fp8", "nvfp4", "mxfp4"])
def test_case_b_keeps_every_pruned_zero(layer, name):
    fmt = FORMATS[name]
    pruned, mask = sparsegpt_prune(layer.w, layer.hessian, 0.5)
    for q in (
        rtn_float(pruned, fmt, mask=mask),
        gptq_quantize(pruned, layer.hessian, 0, mask=mask, fmt=fmt),
    ):
        assert (q[~mask] == 0).all()
        assert (q[mask] != 0).float().mean() > 0.5  # kept weights are not all rounded away


def test_a_group_of_zeros_stays_zero_with_a_positive_scale():
    w = Layer(seed=1).w.clone()
    w[:, :32] = 0
    for fmt in FORMATS.values():
        scale = float_scales(w[:, :32], fmt, None, tensor_scale(w))
        assert (scale > 0).all()
        assert (rtn_float(w, fmt)[:, :32] == 0).all()


def test_bits_per_weight_count_the_scales():
    assert FORMATS["nvfp4"].bits_per_weight(4096) == 4.5
    assert FORMATS["mxfp4"].bits_per_weight(4096) == 4.25
    assert FORMATS["fp8"].bits_per_weight(4096) == 8 + 16 / 4096
    assert [f.nominal_bits for f in FORMATS.values()] == [8, 4, 4]
