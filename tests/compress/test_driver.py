import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from sweep.compress.calibration import Calibration, CalibrationCache, calibration_key
from sweep.compress.config import CompressionConfig
from sweep.compress.driver import (
    block_stats,
    collect_stats,
    compress_model,
    compressible_linears,
    find_blocks,
)

GPTQ_SPARSEGPT = CompressionConfig(
    sparsity=0.5, prune_method="sparsegpt", bits=4, quant_method="gptq", group_size=32
)


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # GQA
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def calibration():
    return torch.randint(0, 96, (6, 24), generator=torch.Generator().manual_seed(1))


class ForwardCounter:
    """Counts calls to the embedding and to each block of ``model``."""

    def __init__(self, model):
        self.calls = 0
        modules = [model.model.embed_tokens, *model.model.layers]
        self.handles = [m.register_forward_pre_hook(self._count) for m in modules]

    def _count(self, module, args):
        self.calls += 1


def _weights(model):
    return {n: layer.weight.detach().clone() for n, layer in compressible_linears(model).items()}


@pytest.mark.parametrize("mode", ["cached", "sequential"])
@pytest.mark.parametrize(
    "config",
    [
        GPTQ_SPARSEGPT,
        CompressionConfig(pattern="2:4", prune_method="sparsegpt", bits=3, order="joint"),
        CompressionConfig(sparsity=0.4, prune_method="wanda", bits=4, order="quant_first"),
        CompressionConfig(bits=3, quant_method="gptq", act_order=True, group_size=32, case="A"),
    ],
    ids=["sparsegpt+gptq", "joint-2:4", "rtn-then-wanda", "gptq-act"],
)
def test_end_to_end_gives_finite_logits_and_the_target_sparsity(mode, config, calibration):
    model = tiny_llama()
    result = compress_model(
        model, config, progress=False, calibration=Calibration(calibration, mode=mode)
    )
    assert result.pruned_fraction == pytest.approx(config.target_sparsity, abs=1e-4)
    assert result.zero_fraction >= result.pruned_fraction
    assert result.calibration_s > 0 and not result.stats_from_cache
    assert torch.isfinite(model(calibration).logits).all()


def test_modes_differ_only_after_the_first_block(calibration):
    cached, sequential = tiny_llama(), tiny_llama()
    compress_model(cached, GPTQ_SPARSEGPT, False, calibration=Calibration(calibration, "cached"))
    compress_model(
        sequential, GPTQ_SPARSEGPT, False, calibration=Calibration(calibration, "sequential")
    )
    a, b = _weights(cached), _weights(sequential)
    assert all(torch.equal(a[n], b[n]) for n in a if ".layers.0." in n)
    assert not all(torch.equal(a[n], b[n]) for n in a if ".layers.1." in n)


def test_second_trial_in_cached_mode_runs_no_forward_pass(calibration):
    model = tiny_llama()
    base = _weights(model)
    cache = CalibrationCache()
    counter = ForwardCounter(model)
    first = compress_model(
        model, GPTQ_SPARSEGPT, False, calibration=Calibration(calibration, cache=cache)
    )
    assert counter.calls > 0 and not first.stats_from_cache
    compressed = _weights(model)

    for name, layer in compressible_linears(model).items():  # restore the base weights
        layer.weight.data.copy_(base[name])
    counter.calls = 0
    second = compress_model(
        model, GPTQ_SPARSEGPT, False, calibration=Calibration(calibration, cache=cache)
    )
    assert counter.calls == 0 and second.stats_from_cache and second.calibration_s == 0
    assert all(torch.equal(compressed[n], w) for n, w in _weights(model).items())


def test_disk_cache_is_shared_by_a_new_cache_object(tmp_path, calibration):
    model = tiny_llama()
    stats = collect_stats(model, calibration)
    key = calibration_key(model, calibration)
    CalibrationCache(tmp_path).put(key, block_stats(model, calibration))
    entry = tmp_path / key
    n_blocks = len(find_blocks(model))
    assert sorted(p.name for p in entry.iterdir()) == [
        *(f"block-{i:04d}.pt" for i in range(n_blocks)), "complete.json"]  # fmt: skip
    blocks = list(CalibrationCache(tmp_path).blocks(key))
    assert [sorted(b) for b in blocks] == [sorted(b) for b in block_stats(model, calibration)]
    loaded = CalibrationCache(tmp_path).get(key)
    assert loaded is not None and loaded.keys() == stats.keys()
    for name in stats:
        torch.testing.assert_close(loaded[name].hessian, stats[name].hessian, rtol=0, atol=0)
    q, k = (loaded[f"model.layers.0.self_attn.{p}_proj"] for p in "qk")
    assert q is k  # layers that read the same input share one set of statistics

    counter = ForwardCounter(model)
    cfg = CompressionConfig(sparsity=0.5, prune_method="wanda")
    result = compress_model(
        model, cfg, False, calibration=Calibration(calibration, cache=CalibrationCache(tmp_path))
    )
    assert result.stats_from_cache and counter.calls == 0


def test_an_entry_left_half_written_is_never_read(tmp_path, calibration):
    model = tiny_llama()
    key = calibration_key(model, calibration)
    cache = CalibrationCache(tmp_path)
    writing = cache.store(key, block_stats(model, calibration))
    next(writing)  # one block written, then the trial dies
    writing.close()
    assert not cache.has(key) and cache.get(key) is None
    assert list(tmp_path.iterdir()) == []  # the temporary folder went with it
    result = compress_model(
        model, GPTQ_SPARSEGPT, False, calibration=Calibration(calibration, cache=cache)
    )
    assert not result.stats_from_cache and cache.has(key, hessian=True)


def test_cached_compression_from_disk_equals_compression_without_a_cache(tmp_path, calibration):
    plain = tiny_llama()
    compress_model(plain, GPTQ_SPARSEGPT, False, calibration=Calibration(calibration))
    filled, streamed = tiny_llama(), tiny_llama()
    cached = Calibration(calibration, cache=CalibrationCache(tmp_path))
    first = compress_model(filled, GPTQ_SPARSEGPT, False, calibration=cached)
    cached = Calibration(calibration, cache=CalibrationCache(tmp_path))
    second = compress_model(streamed, GPTQ_SPARSEGPT, False, calibration=cached)
    assert not first.stats_from_cache and second.stats_from_cache
    a, b, c = _weights(plain), _weights(filled), _weights(streamed)
    assert all(torch.equal(a[n], b[n]) and torch.equal(a[n], c[n]) for n in a)


def test_the_key_depends_on_the_weights_and_the_calibration_set(calibration):
    model = tiny_llama()
    key = calibration_key(model, calibration)
    assert key == calibration_key(tiny_llama(), calibration)
    assert key != calibration_key(model, calibration[:, :-1])
    assert key != calibration_key(tiny_llama(seed=1), calibration)


def test_a_wanda_entry_is_recomputed_when_a_hessian_is_needed(calibration):
    model = tiny_llama()
    cache = CalibrationCache()
    kw = dict(progress=False, calibration=Calibration(calibration, cache=cache))
    compress_model(tiny_llama(), CompressionConfig(sparsity=0.5, prune_method="wanda"), **kw)
    result = compress_model(model, GPTQ_SPARSEGPT, **kw)
    assert not result.stats_from_cache
    assert compress_model(tiny_llama(), GPTQ_SPARSEGPT, **kw).stats_from_cache


@pytest.mark.parametrize("mode", ["cached", "sequential"])
def test_same_inputs_give_bitwise_equal_models(mode, calibration):
    runs = []
    for _ in range(2):
        model = tiny_llama()
        compress_model(
            model, GPTQ_SPARSEGPT, False, calibration=Calibration(calibration, mode=mode)
        )
        runs.append(_weights(model))
    assert all(torch.equal(runs[0][n], runs[1][n]) for n in runs[0])


def test_data_free_configs_need_no_calibration():
    model = tiny_llama()
    counter = ForwardCounter(model)
    result = compress_model(model, CompressionConfig(sparsity=0.5, bits=4), progress=False)
    assert result.pruned_fraction == pytest.approx(0.5) and counter.calls == 0


def test_calibrated_configs_refuse_missing_or_bad_calibration(calibration):
    with pytest.raises(ValueError, match="needs calibration data"):
        compress_model(tiny_llama(), GPTQ_SPARSEGPT, progress=False)
    with pytest.raises(ValueError, match="token ids"):
        Calibration(calibration.float())
    with pytest.raises(ValueError, match="mode"):
        Calibration(calibration, mode="x")


def test_calibration_names_what_is_wrong_with_it(calibration):
    with pytest.raises(ValueError, match=r"of shape \(samples, seq_len\), got \(24,\) torch.int64"):
        Calibration(calibration[0])
    with pytest.raises(ValueError, match=r"mode must be one of \('cached', 'sequential'\)"):
        Calibration(calibration, mode="streamed")
    assert Calibration(calibration).mode == "cached"
