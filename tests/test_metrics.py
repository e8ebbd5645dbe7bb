import math

import pytest

from sweep.metrics import (
    LayerShare,
    Tensor2D,
    capacity_kept,
    layerwise_capacity,
    layerwise_compression_rate,
    normalised_score,
    packed_linear_bytes,
    real_compression_ratio,
    semantic_retention,
    srcr,
    theoretical_compression_rate,
)


@pytest.mark.parametrize(
    ("sparsity", "bits", "expected"),
    [
        (0.0, 4, 0.75),  # 4-bit alone
        (0.5, 8, 0.75),  # 50% + 8-bit
        (0.0, 3, 0.8125),  # 3-bit alone
        (0.25, 4, 0.8125),  # 25% + 4-bit
        (0.0, 2, 0.875),  # 2-bit alone
        (0.5, 4, 0.875),  # 50% + 4-bit
        (0.0, 16, 0.0),  # the base model
    ],
)
def test_tcr_matches_the_papers_comparison_points(sparsity, bits, expected):
    assert theoretical_compression_rate(sparsity, bits) == pytest.approx(expected)


def test_tcr_rejects_sparsity_outside_unit_interval():
    with pytest.raises(ValueError, match="sparsity"):
        theoretical_compression_rate(1.0, 4)


def test_kappa_is_one_for_the_base_model_and_falls_with_compression():
    assert capacity_kept(0.0, 16) == 1.0
    # sqrt(0.75) * log2(4) / 4 = 0.8660 * 0.5
    assert capacity_kept(0.25, 4) == pytest.approx(math.sqrt(0.75) / 2)
    assert capacity_kept(0.0, 2) == pytest.approx(0.25)


def test_normalised_score_is_zero_at_chance_and_one_when_perfect():
    assert normalised_score(0.25, 0.25) == 0.0
    assert normalised_score(1.0, 0.25) == 1.0
    assert normalised_score(0.625, 0.25) == pytest.approx(0.5)
    assert normalised_score(0.1, 0.25) < 0


def test_sr_by_hand():
    base = {"a": 0.85, "b": 0.5}
    random = {"a": 0.25, "b": 0.0}
    compressed = {"a": 0.55, "b": 0.1}
    # n_a: base 0.8, compressed 0.4 -> 0.5 ; n_b: base 0.5, compressed 0.1 -> 0.2
    assert semantic_retention(compressed, base, random) == pytest.approx(0.35)


def test_sr_counts_below_chance_as_zero_not_negative():
    base = {"a": 1.0, "b": 1.0}
    random = {"a": 0.25, "b": 0.25}
    assert semantic_retention({"a": 0.0, "b": 1.0}, base, random) == pytest.approx(0.5)


def test_sr_of_the_base_model_is_one_and_srcr_too():
    base = {"a": 0.9, "b": 0.7}
    random = {"a": 0.25, "b": 0.1}
    sr = semantic_retention(base, base, random)
    assert sr == pytest.approx(1.0)
    assert srcr(sr, capacity_kept(0.0, 16)) == pytest.approx(1.0)


def test_srcr_by_hand():
    # Sr 0.6 at 25% sparsity and 4 bits: kappa = sqrt(0.75) * 2 / 4 = 0.4330
    assert srcr(0.6, capacity_kept(0.25, 4)) == pytest.approx(0.6 / (math.sqrt(0.75) * 0.5))


def test_sr_refuses_a_task_the_base_model_cannot_do():
    with pytest.raises(ValueError, match="at or below chance"):
        semantic_retention({"a": 0.3}, {"a": 0.25}, {"a": 0.25})


def test_packed_bytes_by_hand():
    # 4-bit, 8 rows x 256 cols, groups of 128, asymmetric: values 8 * 256/8 * 4 = 1024 B;
    # scales 8 * 2 * 2 = 32 B; zero-points ceil(8 * 4/32) * 2 * 4 = 8 B; weight_shape 2 * 8 B
    assert packed_linear_bytes(8, 256, 4, 128, symmetric=False) == 1024 + 32 + 8 + 16
    assert packed_linear_bytes(8, 256, 4, 128, symmetric=True) == 1024 + 32 + 16
    # 3-bit packs densely, 32 codes in 3 int32: 256 * 3/32 = 24 ints a row
    assert packed_linear_bytes(8, 256, 3, None, symmetric=True) == 8 * 24 * 4 + 8 * 2 + 16
    # 4 groups of 64; the zero-points of 8 rows * 3 bits fit one int32 per group
    expected = 8 * 24 * 4 + 8 * 4 * 2 + 4 * 4 + 16
    assert packed_linear_bytes(8, 256, 3, 64, symmetric=False) == expected
    assert packed_linear_bytes(8, 256, 16, 128, symmetric=False) == 8 * 256 * 2


def test_real_ratio_counts_uncompressed_parts_and_ignores_sparsity():
    tensors = [
        Tensor2D("embed", 1000, 256, compressible=False),
        Tensor2D("proj", 256, 256, compressible=True),
    ]
    base = (1000 * 256 + 256 * 256) * 2
    packed = packed_linear_bytes(256, 256, 4, 128, symmetric=False)
    expected = base / (1000 * 256 * 2 + packed)
    assert real_compression_ratio(tensors, 4, 128, False) == pytest.approx(expected)
    assert real_compression_ratio(tensors, 16, 128, False) == 1.0
    assert real_compression_ratio(tensors, 4, 128, False) < 1 / (1 - 0.75)


def test_layerwise_metrics_by_hand_and_equal_to_the_uniform_ones_when_layers_agree():
    layers = [LayerShare(100, 0.5, 4), LayerShare(300, 0.25, 2)]
    # kept bits: 100 * 0.5 * 4 + 300 * 0.75 * 2 = 650, of 16 * 400 = 6400
    assert layerwise_compression_rate(layers) == pytest.approx(1 - 650 / 6400, abs=1e-15)
    kappa = (100 * math.sqrt(0.5) * 2 / 4 + 300 * math.sqrt(0.75) * 1 / 4) / 400
    assert layerwise_capacity(layers) == pytest.approx(kappa, abs=1e-15)
    same = [LayerShare(100, 0.3, 4), LayerShare(300, 0.3, 4)]
    assert layerwise_compression_rate(same) == pytest.approx(theoretical_compression_rate(0.3, 4))
    assert layerwise_capacity(same) == pytest.approx(capacity_kept(0.3, 4))


def test_real_ratio_takes_each_layers_width():
    tensors = [
        Tensor2D("a", 64, 128, True),
        Tensor2D("b", 32, 128, True),
        Tensor2D("e", 50, 64, False),
    ]
    mixed = real_compression_ratio(tensors, {"a": 2, "b": 8}, 64, False)
    written = packed_linear_bytes(64, 128, 2, 64, False) + packed_linear_bytes(
        32, 128, 8, 64, False
    )
    dense = (64 * 128 + 32 * 128 + 50 * 64) * 2
    assert mixed == pytest.approx(dense / (written + 50 * 64 * 2), rel=1e-15)
