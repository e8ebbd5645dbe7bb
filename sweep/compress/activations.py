"""Activation quantization as the runtime applies it, on the in-memory model during evaluation:
what is evaluated is what is served.

- ``fp8_dynamic`` (llm-compressor's FP8_DYNAMIC, vLLM's FP8 W8A8 from compute capability 8.9):
  every input of a compressed Linear is rounded to FP8 e4m3 per token, with the scale
  max|x_token| / 448 computed at run time.
- ``nvfp4`` (llm-compressor's NVFP4, vLLM's W4A4 from 10.0): every input is rounded to e2m1 in
  groups of 16 features, each group's scale computed at run time and stored in e4m3 over the
  layer's FP32 input scale. That scale is calibrated: ``448 * 6`` over the largest input the
  layer sees on the calibration set once its weights are compressed (``calibrate_input_scales``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from sweep.compress.blocks import compressible_linears
from sweep.compress.formats import E2M1_MAX, E4M3_MAX, round_e2m1, round_e4m3, tensor_scale

NONE = "none"
ACTIVATIONS = (NONE, "fp8_dynamic", "nvfp4")
# weight format -> activation choices
FORMATS_WITH_ACTIVATIONS = {"fp8": ("fp8_dynamic",), "nvfp4": ("nvfp4",)}
CALIBRATED = ("nvfp4",)  # activations with a scale per layer fitted on calibration data
NVFP4_GROUP = 16


def activations_of(fmt: str) -> tuple[str, ...]:
    """The activation choices weights of format ``fmt`` take (``none`` alone where it has none)."""
    return (NONE, *FORMATS_WITH_ACTIVATIONS.get(fmt, ()))


def fp8_per_token(x: torch.Tensor) -> torch.Tensor:
    """``x`` (..., features) rounded to e4m3 per token (its last dimension), scale
    max|x_token| / 448 (1 for a token of zeros); dequantized, in ``x``'s dtype."""
    xf = x.float()
    scale = xf.abs().amax(dim=-1, keepdim=True) / E4M3_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (round_e4m3(xf / scale) * scale).to(x.dtype)


def nvfp4_per_group(x: torch.Tensor, input_scale: float) -> torch.Tensor:
    """``x`` (..., features) rounded to e2m1 in groups of 16 features, as vLLM's W4A4 kernel
    quantizes a Linear's input: each group's scale ``input_scale * max|x_group| / 6`` rounded to
    the nearest e4m3 value, and a group whose scale rounds to 0 sent to 0; dequantized, in
    ``x``'s dtype."""
    xf = x.float()
    groups = xf.reshape(*xf.shape[:-1], xf.shape[-1] // NVFP4_GROUP, NVFP4_GROUP)
    stored = round_e4m3(input_scale * groups.abs().amax(dim=-1, keepdim=True) / E2M1_MAX)
    scale = stored / input_scale
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.where(scale > 0, round_e2m1(groups / safe) * scale, torch.zeros_like(groups))
    return q.reshape(xf.shape).to(x.dtype)


@torch.no_grad()
def calibrate_input_scales(
    model: nn.Module, token_ids: torch.Tensor, batch_size: int = 8
) -> dict[str, float]:
    """Each compressible Linear's NVFP4 input scale, ``448 * 6`` over the largest input it
    receives when ``model`` (compressed) runs on ``token_ids`` (samples, seq_len), by name: a
    static min-max observer, as llm-compressor calibrates NVFP4's activations."""
    linears = compressible_linears(model)
    amax = dict.fromkeys(linears, 0.0)

    def observe(name: str):
        def hook(module: nn.Module, args: tuple) -> None:
            amax[name] = max(amax[name], float(args[0].detach().abs().max()))

        return hook

    handles = [layer.register_forward_pre_hook(observe(n)) for n, layer in linears.items()]
    device = model.get_input_embeddings().weight.device
    # the transformer without its head: the logits (batch x tokens x vocabulary) are not needed
    # and would be the largest tensor of the pass
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    try:
        for batch in token_ids.split(batch_size):
            decoder(input_ids=batch.to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return {name: tensor_scale(torch.tensor(a)) for name, a in amax.items()}


QUANTIZERS = {"fp8_dynamic": fp8_per_token}


@contextmanager
def quantized_activations(
    model: nn.Module, activations: str, input_scales: dict[str, float] | None = None
) -> Iterator[None]:
    """Within the block, the inputs of ``model``'s compressible Linears are quantized as
    ``activations`` says (nothing for ``none``); calibrated activations (``CALIBRATED``) take
    each layer's scale from ``input_scales``."""
    if activations == NONE:
        yield
        return
    linears = compressible_linears(model)
    if activations in CALIBRATED:
        missing = sorted(set(linears) - set(input_scales or {}))
        if missing:
            raise ValueError(f"{activations} activations need every layer's input scale, "
                             f"none for {missing[0]} (calibrate_input_scales)")  # fmt: skip
        assert input_scales is not None

        def quantizer(name: str):
            scale = input_scales[name]
            return lambda x: nvfp4_per_group(x, scale)

        quantizers = {name: quantizer(name) for name in linears}
    else:
        quantizers = dict.fromkeys(linears, QUANTIZERS[activations])

    def hook(quantize):
        return lambda module, args: (quantize(args[0]), *args[1:])

    handles = [
        layer.register_forward_pre_hook(hook(quantizers[name])) for name, layer in linears.items()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
