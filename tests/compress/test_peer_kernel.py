"""Our GPTQ kernel against llm-compressor's (``quantize_weight``, the peer of ``make
bench-engine``) on the same weight, Hessian and scales: symmetric groups with static activation
order, as the bench's recipe sets them; and the one way the two tools' grids differ, their
scales. Where the two tools' perplexities differ, these say that the kernels are not why and
what is (docs/benchmarks.md)."""

import math

import pytest
import torch

from sweep.compress.gptq import gptq_quantize
from sweep.compress.hessian import BLOCK_SIZE, DAMPENING
from sweep.compress.rtn import round_up_to_scale_dtype

from .conftest import Layer


def _peer(w: torch.Tensor, h: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.utils import calculate_qparams
    from llmcompressor.modifiers.gptq.gptq_quantize import quantize_weight

    args = QuantizationArgs(
        num_bits=bits, type="int", symmetric=True, strategy="group", group_size=group,
        actorder="static",
    )  # fmt: skip
    # the peer's own min-max scales, rounded up to bfloat16 as ours are stored (the one way the
    # two grids differ: see the test below)
    groups = w.reshape(w.shape[0], -1, group)  # (rows, groups, group)
    peer_scale, _ = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
    scale = round_up_to_scale_dtype(peer_scale)
    zero = torch.zeros_like(scale, dtype=torch.int8)
    q, _, fallback = quantize_weight(
        w[None].clone(), h[None].clone(), scale[None], zero[None], None, args,
        BLOCK_SIZE, DAMPENING,
    )  # fmt: skip
    assert not fallback.any()
    return q[0]


@pytest.mark.parametrize(("bits", "group"), [(3, 64), (4, 32)])
def test_gptq_matches_llm_compressors_kernel(bits, group):
    layer = Layer(seed=3)
    ours = gptq_quantize(layer.w, layer.hessian, bits, group, symmetric=True, act_order=True)
    peer = _peer(layer.w, layer.hessian, bits, group)
    mismatch = (ours - peer).abs() > 1e-5
    assert int(mismatch.sum()) <= math.ceil(1e-3 * layer.w.numel())  # rounding-boundary flips
    assert layer.error(ours) == pytest.approx(layer.error(peer), rel=1e-3)
    assert layer.error(ours) < 0.9 * layer.error(gptq_quantize(layer.w, layer.hessian, bits, group,
                                                                symmetric=True))  # fmt: skip


@pytest.mark.parametrize("bits", [3, 4])
def test_the_grids_differ_only_by_our_scale_rounded_up_to_16_bits(bits):
    """llm-compressor's symmetric scale is max|w| / ((2^b - 1) / 2) in float32, which puts each
    group's largest weight half-way between two codes (up to float rounding): a negative one may
    round outward, to the grid's extra code -2^(b-1). Ours is that scale rounded up to the 16-bit
    type the export stores, never below it, so the largest weight rounds inward."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.utils import calculate_qparams

    from sweep.compress.rtn import codes, quant_params

    w = Layer(seed=5).w[:, :64]  # (rows, one group)
    args = QuantizationArgs(num_bits=bits, type="int", symmetric=True, strategy="group",
                            group_size=64)  # fmt: skip
    peer, _ = calculate_qparams(w.amin(1, keepdim=True), w.amax(1, keepdim=True), args)
    ours, zero = quant_params(w, bits, symmetric=True)
    largest = w.abs().amax(1, keepdim=True)
    assert torch.equal(peer, largest / ((2**bits - 1) / 2))
    assert torch.equal(ours, round_up_to_scale_dtype(peer))
    assert (ours >= peer).all() and (ours > peer).any()
    row, col = torch.arange(w.shape[0]), w.abs().argmax(1)
    extreme = w[row, col]

    def rounded(scale: torch.Tensor) -> torch.Tensor:
        return ((codes(w, scale, zero, bits) - zero) * scale)[row, col]

    assert (rounded(ours).abs() < extreme.abs()).all()  # inward, on both signs
    negative = extreme < 0
    assert negative.any() and (rounded(peer)[negative].abs() > extreme[negative].abs()).any()
