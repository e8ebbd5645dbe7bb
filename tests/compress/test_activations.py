"""Activation quantization during evaluation: FP8 per token, on while the block runs, gone after."""

import pytest
import torch

from sweep.compress.activations import fp8_per_token, quantized_activations
from sweep.compress.blocks import compressible_linears
from sweep.compress.formats import round_e4m3

from .test_driver import tiny_llama


def on_e4m3(x: torch.Tensor) -> bool:
    """Every entry an e4m3 value, up to the float rounding of dividing by its scale."""
    return torch.allclose(x, round_e4m3(x), rtol=1e-5, atol=0)


def test_fp8_per_token_puts_each_token_on_the_e4m3_grid_of_its_own_scale():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 64, generator=g) * torch.tensor([0.01, 1.0, 100.0])[:, None, None]
    x[0, 0] = 0.0
    q = fp8_per_token(x)
    scale = x.abs().amax(-1, keepdim=True) / 448
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    assert on_e4m3(q / scale)
    assert torch.equal(q[0, 0], torch.zeros(64))
    largest = x.abs().argmax(-1, keepdim=True)
    assert torch.allclose(q.gather(-1, largest), x.gather(-1, largest), rtol=1e-6)  # 448 exact
    # e4m3: 3 mantissa bits; below 2^-6 (subnormal) a step of 2^-9, so half of it at most
    assert ((q - x).abs() <= torch.maximum(x.abs() * 2**-4, scale * 2**-10) * (1 + 1e-6)).all()


def test_quantized_activations_act_inside_the_block_only():
    model = tiny_llama().eval()
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))
    seen: list[torch.Tensor] = []
    first = next(iter(compressible_linears(model).values()))
    with torch.no_grad():
        plain = model(ids).logits
        with quantized_activations(model, "none"):
            assert torch.equal(model(ids).logits, plain)
        with quantized_activations(model, "fp8_dynamic"):
            probe = first.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
            quantized = model(ids).logits  # the probe runs after the quantizing hook
            probe.remove()
        after = model(ids).logits
    assert not torch.equal(quantized, plain) and torch.equal(after, plain)
    scale = seen[0].abs().amax(-1, keepdim=True) / 448
    assert on_e4m3(seen[0] / scale)  # what the layer received: its input, rounded per token


def test_nvfp4_per_group_puts_each_group_on_e2m1_under_its_e4m3_scale():
    from sweep.compress.activations import nvfp4_per_group
    from sweep.compress.formats import round_e2m1

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 64, generator=g) * torch.tensor([0.01, 1.0, 30.0])[None, :, None]
    x[0, 0, :16] = 0.0  # a group of zeros
    global_scale = 448 * 6 / float(x.abs().max())
    q = nvfp4_per_group(x, global_scale)
    groups, qg = x.reshape(2, 3, 4, 16), q.reshape(2, 3, 4, 16)
    stored = groups.abs().amax(-1, keepdim=True) * global_scale / 6
    assert torch.equal(round_e4m3(stored), round_e4m3(round_e4m3(stored)))  # e4m3 values
    scale = round_e4m3(stored) / global_scale
    nonzero = scale > 0
    elements = torch.where(nonzero, qg / torch.where(nonzero, scale, 1.0), 0.0)
    assert torch.allclose(elements, round_e2m1(elements), atol=1e-5)  # on the e2m1 grid
    assert torch.equal(qg[0, 0, 0], torch.zeros(16))
    # a group's largest input maps to at most 6 of its scale, and rounds within half a step
    err = (qg - groups).abs()
    assert (err <= torch.maximum(groups.abs() * 0.25, scale * 0.25) * (1 + 1e-5) + 1e-12).all()


def test_nvfp4_input_scales_are_calibrated_on_the_largest_input_each_layer_sees():
    from sweep.compress.activations import calibrate_input_scales

    model = tiny_llama().eval()
    ids = torch.randint(0, 96, (6, 12), generator=torch.Generator().manual_seed(1))
    seen: dict[str, float] = {}
    linears = compressible_linears(model)

    def record(name):
        def hook(module, args):
            seen[name] = max(seen.get(name, 0.0), float(args[0].abs().max()))

        return hook

    handles = [layer.register_forward_pre_hook(record(n)) for n, layer in linears.items()]
    with torch.no_grad():
        model(ids)
    for h in handles:
        h.remove()
    scales = calibrate_input_scales(model, ids, batch_size=4)  # two batches, one max
    assert set(scales) == set(linears)
    for name, amax in seen.items():
        assert scales[name] == pytest.approx(448 * 6 / amax, rel=1e-6)
    attention = [f"model.layers.0.self_attn.{p}_proj" for p in "qkv"]
    assert len({scales[n] for n in attention}) == 1  # q, k and v read one input: one scale
    with (
        pytest.raises(ValueError, match="need every layer's input scale"),
        quantized_activations(model, "nvfp4", {}),
    ):
        pass
