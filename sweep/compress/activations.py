"""Activation quantization as the runtime applies it, on the in-memory model during evaluation:
what is evaluated is what is served.

``fp8_dynamic`` (llm-compressor's FP8_DYNAMIC, vLLM's FP8 W8A8 from compute capability 8.9):
every input of a compressed Linear is rounded to FP8 e4m3 per token, with the scale
max|x_token| / 448 computed at run time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from sweep.compress.blocks import compressible_linears
from sweep.compress.formats import E4M3_MAX, round_e4m3

NONE = "none"
ACTIVATIONS = (NONE, "fp8_dynamic")
FORMATS_WITH_ACTIVATIONS = {"fp8": ("fp8_dynamic",)}  # weight format -> activation choices


def fp8_per_token(x: torch.Tensor) -> torch.Tensor:
    """``x`` (..., features) rounded to e4m3 per token (its last dimension), scale
    max|x_token| / 448 (1 for a token of zeros); dequantized, in ``x``'s dtype."""
    xf = x.float()
    scale = xf.abs().amax(dim=-1, keepdim=True) / E4M3_MAX
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (round_e4m3(xf / scale) * scale).to(x.dtype)


QUANTIZERS = {"fp8_dynamic": fp8_per_token}


@contextmanager
def quantized_activations(model: nn.Module, activations: str) -> Iterator[None]:
    """Within the block, the inputs of ``model``'s compressible Linears are quantized as
    ``activations`` says (nothing for ``none``)."""
    if activations == NONE:
        yield
        return
    quantize = QUANTIZERS[activations]
    handles = [
        layer.register_forward_pre_hook(lambda module, args: (quantize(args[0]), *args[1:]))
        for layer in compressible_linears(model).values()
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
