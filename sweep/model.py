"""Loading the model under study, and restoring its weights between trials."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from sweep.compress.blocks import compressible_linears
from sweep.errors import UserError
from sweep.metrics import Tensor2D
from sweep.spec import check_device_name
from sweep.zoo import is_named, model_folder

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(UserError, ValueError):
    """The model named by a study could not be loaded."""


class DeviceError(UserError, ValueError):
    """A device that does not exist on this machine."""


def resolve_device(device: str) -> str:
    """The device to run on: ``auto`` is a GPU when there is one, else the CPU."""
    try:
        check_device_name(device)
    except ValueError as err:
        raise DeviceError(str(err)) from None
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU build"
            raise DeviceError(
                f"device {device!r}: no CUDA GPU is visible here (torch {torch.__version__}, "
                f"{build}); use device auto or cpu"
            )
        index = int(device.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {device!r}: this machine has {torch.cuda.device_count()} GPU(s), "
                f"cuda:0 to cuda:{torch.cuda.device_count() - 1}"
            )
    if device == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("device 'mps': no Apple GPU is available here; use device auto or cpu")
    return device


def load_model(
    name: str | Path, dtype: str = "auto", device: str = "cpu", trust_remote_code: bool = False
) -> tuple[nn.Module, object]:
    """Load a causal LM and its tokenizer, in eval mode on ``device``: a local folder, a
    Hugging Face id, or a model sweep knows by name (``sweep.zoo``).

    ``dtype="auto"`` computes in float32 on the CPU (fast and exact there) and in the checkpoint's
    own dtype on a GPU. Code that ships with a model runs only with ``trust_remote_code``;
    transformers is never left to ask on the terminal.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = str(model_folder(str(name))) if is_named(str(name)) else str(name)
    looks_local = source.startswith((".", "/", "~")) or Path(source).exists()
    if looks_local and not Path(source).expanduser().is_dir():
        raise ModelLoadError(f"model folder {source} does not exist")
    if dtype == "auto":
        torch_dtype = torch.float32 if device == "cpu" else "auto"
    else:
        torch_dtype = _DTYPES[dtype]
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except Exception as err:  # transformers, safetensors and torch raise many kinds
        raise ModelLoadError(_load_failure(source, err)) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def _load_failure(name: str, err: Exception) -> str:
    """One line saying why ``name`` did not load."""
    text = " ".join(str(err).split())
    if "trust_remote_code" in text:
        return (
            f"model {name} needs to run code that ships with it, which sweep does not do unless "
            "the spec says `trust_remote_code: true` (read that code first)"
        )
    if "Unrecognized configuration class" in text:
        found = re.search(r"(\w+Config)\b", text)
        kind = found.group(1) if found else "another kind"
        return (
            f"model {name} is not a causal language model ({kind}); sweep compresses "
            "decoder-only models that transformers loads with AutoModelForCausalLM"
        )
    if "weights_only" in text or type(err).__name__ == "UnpicklingError":
        return (
            f"model {name}: its pickle checkpoint holds objects that torch refuses to load "
            "safely (weights_only); convert it to safetensors"
        )
    if len(text) > 300:
        text = text[:300] + " ..."
    return f"cannot load model {name}: {type(err).__name__}: {text}"


def round_weights(model: nn.Module, dtype: torch.dtype) -> None:
    """Round every floating-point parameter to ``dtype``'s precision, in place (keeping the
    parameter's own dtype): the values a ``dtype`` checkpoint of the model holds."""
    with torch.no_grad():
        for p in model.parameters():
            if p.is_floating_point() and p.dtype != dtype:
                p.copy_(p.to(dtype).to(p.dtype))


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
