"""A model as a worker holds it for its trials: loaded once, its weights rounded to the dtype a
checkpoint stores, the snapshot each trial restores, its tokenizer, the shapes of its
parameters and its fused groups, and the fingerprints of its weights and tokenizer."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from sweep.compress.fused import fused_groups
from sweep.deployment import Layout
from sweep.identity import tokenizer_fingerprint, weights_fingerprint
from sweep.metrics import Tensor2D
from sweep.model import WeightSnapshot, round_weights, tensor_inventory

_16_BIT = (torch.bfloat16, torch.float16)


def storage_dtype(model: nn.Module) -> torch.dtype:
    """The dtype a checkpoint of ``model`` stores its dense weights and scales in: the config's
    dtype when it is a 16-bit one, else bfloat16 (a model loaded in float32 on the CPU reports
    float32 whatever its checkpoint holds)."""
    dtype = getattr(getattr(model, "config", None), "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.removeprefix("torch."), None)
    return dtype if dtype in _16_BIT else torch.bfloat16


class LoadedModel:
    """Every weight is rounded to ``storage_dtype`` here, and compressed weights again after
    compression (``compress_model``), so that a trial evaluates exactly the values that the
    exported 16-bit checkpoint holds, whatever dtype the model was loaded in."""

    def __init__(
        self, model: nn.Module, tokenizer: Any, inventory: list[Tensor2D] | None = None
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.inventory = tensor_inventory(model) if inventory is None else inventory
        self.storage_dtype = storage_dtype(model)
        round_weights(model, self.storage_dtype)  # a trial evaluates what an export stores
        self.snapshot = WeightSnapshot(model)
        self.weights_fingerprint = weights_fingerprint(model)
        self.tokenizer_fingerprint = tokenizer_fingerprint(tokenizer)
        self._layout: Layout | None = None

    def restore(self) -> None:
        """Put the base weights back (before each trial)."""
        self.snapshot.restore()

    def layout(self) -> Layout:
        """The model as deploy rules read it: its weights' shapes and its fused groups."""
        if self._layout is None:
            self._layout = Layout(self.inventory, fused_groups(self.model))
        return self._layout

    def input_widths(self) -> dict[str, int]:
        """The input width of every compressible layer, by parameter name."""
        return {t.name: t.cols for t in self.inventory if t.compressible}
