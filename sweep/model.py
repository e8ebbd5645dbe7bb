"""Loading the model under study, and restoring its weights between trials."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from sweep.compress.driver import compressible_linears
from sweep.metrics import Tensor2D
from sweep.spec import DEMO_MODEL

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(ValueError):
    """The model named by a study could not be loaded."""


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def model_source(name: str) -> str:
    """The path or hub id to load: the bundled demo model for ``"demo"``."""
    if name == DEMO_MODEL:
        from sweep.demo import MODEL_DIR

        return str(MODEL_DIR)
    return name


def load_model(name: str, dtype: str = "auto", device: str = "cpu") -> tuple[nn.Module, object]:
    """Load a causal LM and its tokenizer, in eval mode on ``device``.

    ``dtype="auto"`` computes in float32 on the CPU (fast and exact there) and in the checkpoint's
    own dtype on a GPU.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = model_source(name)
    looks_local = source.startswith((".", "/", "~")) or Path(source).exists()
    if looks_local and not Path(source).expanduser().is_dir():
        raise ModelLoadError(f"model folder {source} does not exist")
    if dtype == "auto":
        torch_dtype = torch.float32 if device == "cpu" else "auto"
    else:
        torch_dtype = _DTYPES[dtype]
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch_dtype)
    except OSError as err:
        raise ModelLoadError(f"cannot load model {name!r}: {err}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def tensor_inventory(model: nn.Module) -> list[Tensor2D]:
    """Every parameter's shape, marking the weights that the engine compresses."""
    compressible = {id(layer.weight) for layer in compressible_linears(model).values()}
    inventory = []
    for name, p in model.named_parameters():
        rows, cols = (p.shape[0], p[0].numel()) if p.dim() > 1 else (p.numel(), 1)
        inventory.append(Tensor2D(name, rows, cols, id(p) in compressible))
    return inventory


class WeightSnapshot:
    """A copy of the compressible weights, kept on the CPU, to undo a trial's compression."""

    def __init__(self, model: nn.Module) -> None:
        self._layers = compressible_linears(model)
        self._saved = {n: m.weight.detach().to("cpu", copy=True) for n, m in self._layers.items()}

    @torch.no_grad()
    def restore(self) -> None:
        for name, layer in self._layers.items():
            layer.weight.copy_(self._saved[name])
