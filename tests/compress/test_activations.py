"""Activation quantization during evaluation: FP8 per token, on while the block runs, gone after."""

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
