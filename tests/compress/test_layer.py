import pytest
import torch

from sweep.compress.calibration import LayerStats
from sweep.compress.config import CompressionConfig
from sweep.compress.layer import compress_weight, requires_calibration


def _w(seed=0):
    return torch.randn(32, 256, generator=torch.Generator().manual_seed(seed))


def test_case_b_keeps_every_pruned_zero():
    w = _w()
    cfg = CompressionConfig(sparsity=0.5, bits=2, order="prune_first", case="B")
    out, keep = compress_weight(w, cfg)
    assert torch.all(out[~keep] == 0)
    assert int((~keep).sum()) == w.numel() // 2


def test_case_a_and_b_agree_for_round_to_nearest():
    # RTN's range always holds zero and magnitude pruning keeps each group's extremes, so the
    # mask changes nothing: the cases differ only where error feedback (GPTQ) moves zeros.
    w = _w(1)
    a, keep_a = compress_weight(w, CompressionConfig(sparsity=0.5, bits=3, case="A"))
    b, keep_b = compress_weight(w, CompressionConfig(sparsity=0.5, bits=3, case="B"))
    assert torch.equal(keep_a, keep_b)
    assert torch.equal(a, b)
    assert torch.all(a[~keep_a] == 0)


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_quantize_then_prune_ends_at_the_target_sparsity(pattern):
    w = _w(2)
    cfg = CompressionConfig(sparsity=0.3, pattern=pattern, bits=4, order="quant_first")
    out, keep = compress_weight(w, cfg)
    target = 0.3 if pattern == "unstructured" else 0.5
    assert int((~keep).sum()) == round(target * w.numel())
    assert torch.all(out[~keep] == 0)


def test_no_compression_returns_the_same_weight():
    w = _w(3)
    out, keep = compress_weight(w, CompressionConfig())
    assert torch.equal(out, w) and keep.all()


def test_unknown_method_suggests_the_near_name():
    with pytest.raises(ValueError, match="Did you mean 'magnitude'"):
        CompressionConfig(sparsity=0.5, prune_method="magnitud")


# --- methods that read calibration statistics --------------------------------------------------


@pytest.fixture
def stats(layer):
    return LayerStats(layer.hessian, layer.sq_norms, layer.x.shape[0])


def _max_values_per_group(q, group_size):
    return max(
        row[s : s + group_size].unique().numel()
        for row in q
        for s in range(0, q.shape[1], group_size)
    )


def test_case_a_moves_pruned_weights_and_case_b_keeps_them_zero(layer, stats):
    common = dict(sparsity=0.5, prune_method="sparsegpt", bits=3, quant_method="gptq")
    a, keep_a = compress_weight(layer.w, CompressionConfig(**common, case="A"), stats)
    b, keep_b = compress_weight(layer.w, CompressionConfig(**common, case="B"), stats)
    assert torch.equal(keep_a, keep_b)
    assert torch.all(b[~keep_b] == 0)
    assert int((a[~keep_a] != 0).sum()) > 0
    assert layer.error(a) < layer.error(b)  # Case A's extra freedom lowers the error


@pytest.mark.parametrize("prune_method", ["wanda", "sparsegpt"])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_quantize_then_prune_with_calibrated_methods(layer, stats, prune_method, pattern):
    cfg = CompressionConfig(
        sparsity=0.3,
        pattern=pattern,
        prune_method=prune_method,
        bits=3,
        group_size=32,
        quant_method="gptq",
        order="quant_first",
    )
    out, keep = compress_weight(layer.w, cfg, stats)
    assert int((~keep).sum()) == round(cfg.target_sparsity * layer.w.numel())
    assert torch.all(out[~keep] == 0)
    assert _max_values_per_group(out, 32) <= 8  # kept weights stay on the grid


@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_joint_sparsegpt_is_one_pass_at_the_exact_sparsity(layer, stats, pattern):
    cfg = CompressionConfig(
        sparsity=0.5,
        pattern=pattern,
        prune_method="sparsegpt",
        bits=4,
        group_size=32,
        order="joint",
    )
    out, keep = compress_weight(layer.w, cfg, stats)
    assert int((~keep).sum()) == layer.w.numel() // 2
    assert torch.all(out[~keep] == 0)
    assert _max_values_per_group(out, 32) <= 16
    rtn_after = CompressionConfig(**{**cfg.to_dict(), "order": "prune_first"})
    assert layer.error(out) < layer.error(compress_weight(layer.w, rtn_after, stats)[0])


def test_joint_without_a_joint_pruner_is_prune_first_case_b(layer, stats):
    common = dict(sparsity=0.5, prune_method="wanda", bits=3, quant_method="gptq")
    joint, _ = compress_weight(layer.w, CompressionConfig(**common, order="joint"), stats)
    case_b, _ = compress_weight(layer.w, CompressionConfig(**common, case="B"), stats)
    assert torch.equal(joint, case_b)


@pytest.mark.parametrize(
    ("fields", "needs"),
    [
        ({"sparsity": 0.5, "bits": 4}, False),
        ({"sparsity": 0.5, "prune_method": "wanda"}, True),
        ({"sparsity": 0.5, "prune_method": "sparsegpt"}, True),
        ({"bits": 4, "quant_method": "gptq"}, True),
        ({"bits": 16, "quant_method": "gptq", "sparsity": 0.5}, False),
        ({"sparsity": 0.0, "prune_method": "sparsegpt", "bits": 4}, False),
    ],
)
def test_requires_calibration(fields, needs):
    assert requires_calibration(CompressionConfig(**fields)) is needs


@pytest.mark.parametrize(
    "fields", [{"sparsity": 0.5, "prune_method": "sparsegpt"}, {"bits": 4, "quant_method": "gptq"}]
)
def test_calibrated_methods_without_stats_say_so(fields):
    with pytest.raises(ValueError, match="needs calibration statistics"):
        compress_weight(_w(), CompressionConfig(**fields))
