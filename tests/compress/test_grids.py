"""The recorded grid of a quantized weight decodes to exactly that weight: what the export writes
(integer codes, 16-bit scales, zero-points) is what the engine evaluated."""

import pytest
import torch

from sweep.compress.calibration import Calibration, LayerStats
from sweep.compress.config import CompressionConfig
from sweep.compress.driver import compress_model, compressible_linears
from sweep.compress.layer import compress_weight, quant_spec
from sweep.compress.rtn import QuantGrid, QuantSpec

from .test_driver import tiny_llama

CONFIGS = {
    "rtn-g32-asym": CompressionConfig(bits=4, group_size=32),
    "rtn-ch-sym": CompressionConfig(bits=3, group_size=None, symmetric=True),
    "rtn-8bit-g64": CompressionConfig(bits=8, group_size=64),
    "rtn-2bit-g128-sym": CompressionConfig(bits=2, group_size=128, symmetric=True),
    "gptq-g32": CompressionConfig(bits=4, group_size=32, quant_method="gptq"),
    "gptq-ch-sym": CompressionConfig(bits=3, group_size=None, symmetric=True, quant_method="gptq"),
    "gptq-act-order": CompressionConfig(bits=3, group_size=32, quant_method="gptq", act_order=True),
    "sparsegpt-then-gptq-caseA": CompressionConfig(
        sparsity=0.5, prune_method="sparsegpt", bits=4, quant_method="gptq", case="A"
    ),
    "wanda-then-gptq-caseB": CompressionConfig(
        pattern="2:4", prune_method="wanda", bits=4, group_size=64, quant_method="gptq"
    ),
    "rtn-then-magnitude": CompressionConfig(
        sparsity=0.4, bits=4, group_size=32, order="quant_first"
    ),
    "gptq-then-sparsegpt": CompressionConfig(
        sparsity=0.3, prune_method="sparsegpt", bits=3, quant_method="gptq", order="quant_first"
    ),
    "joint-sparsegpt": CompressionConfig(
        sparsity=0.5, prune_method="sparsegpt", bits=4, group_size=32, order="joint"
    ),
    "joint-sparsegpt-2:4-ch": CompressionConfig(
        pattern="2:4", prune_method="sparsegpt", bits=3, group_size=None, order="joint"
    ),
    "joint-magnitude": CompressionConfig(sparsity=0.5, bits=4, group_size=64, order="joint"),
}


def _compress(layer, config):
    stats = LayerStats(layer.hessian, layer.sq_norms, layer.x.shape[0])
    grid = QuantGrid.empty(*layer.w.shape, quant_spec(config))
    out, keep = compress_weight(layer.w, config, stats, grid)
    return out, keep, grid


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_codes_on_the_recorded_grid_give_back_the_weight_exactly(layer, config):
    out, keep, grid = _compress(layer, config)
    codes = grid.codes(out)
    assert int(codes.max()) < 2**config.bits
    assert torch.equal(grid.dequantize(codes), out)
    assert torch.all(out[~keep] == 0) or config.case == "A"


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
def test_recorded_grid_has_16_bit_scales_and_integer_zero_points(layer, config):
    _, _, grid = _compress(layer, config)
    assert torch.all(grid.scale > 0)
    assert torch.equal(grid.scale.to(torch.bfloat16).float(), grid.scale)
    assert torch.equal(grid.zero, grid.zero.round())
    assert float(grid.zero.min()) >= 0 and float(grid.zero.max()) <= 2**config.bits - 1
    if config.symmetric:
        assert torch.all(grid.zero == 2 ** (config.bits - 1))


def test_grid_that_does_not_fit_is_refused(layer):
    config = CompressionConfig(bits=4, group_size=32)
    wrong = QuantGrid.empty(*layer.w.shape, QuantSpec(4, 64))
    with pytest.raises(ValueError, match="grid does not fit"):
        compress_weight(layer.w, config, None, wrong)


def test_last_short_group_is_recorded():
    w = torch.randn(8, 100, generator=torch.Generator().manual_seed(0))
    config = CompressionConfig(bits=4, group_size=32)  # groups of 32, 32, 32, 4
    grid = QuantGrid.empty(8, 100, quant_spec(config))
    out, _ = compress_weight(w, config, None, grid)
    assert grid.scale.shape == (8, 4)
    assert torch.equal(grid.dequantize(grid.codes(out)), out)


@pytest.mark.parametrize(
    "config",
    [
        CompressionConfig(bits=4, group_size=32),
        CompressionConfig(sparsity=0.5, prune_method="sparsegpt", bits=3, order="joint"),
        CompressionConfig(sparsity=0.5, prune_method="sparsegpt"),  # not quantized: no grids
    ],
    ids=["rtn", "joint", "prune-only"],
)
def test_compress_model_records_a_grid_per_quantized_linear(config):
    model = tiny_llama()
    calibration = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(1))
    result = compress_model(
        model, config, False, calibration=Calibration(calibration), record_grids=True
    )
    linears = compressible_linears(model)
    assert set(result.grids) == (set(linears) if config.quantizes else set())
    for name, grid in result.grids.items():
        weight = linears[name].weight.data
        assert torch.equal(grid.dequantize(grid.codes(weight)), weight)


def test_storage_dtype_rounds_dense_weights_and_leaves_grid_values():
    calibration = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(1))
    dense = CompressionConfig(sparsity=0.5, prune_method="sparsegpt")
    quantized = CompressionConfig(bits=4, group_size=32, quant_method="gptq")
    for config in (dense, quantized):
        plain, stored = tiny_llama(), tiny_llama()
        kw = dict(progress=False, calibration=Calibration(calibration))
        compress_model(plain, config, **kw)
        compress_model(stored, config, storage_dtype=torch.bfloat16, **kw)
        for name, layer in compressible_linears(stored).items():
            weight = layer.weight.data
            assert weight.dtype == torch.float32
            assert torch.equal(weight, weight.to(torch.bfloat16).float()) or config.quantizes
            expected = compressible_linears(plain)[name].weight.data
            if config.quantizes:
                assert torch.equal(weight, expected)
            else:
                assert torch.equal(weight, expected.to(torch.bfloat16).float())
