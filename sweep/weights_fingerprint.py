"""A model's weights named by their content, whatever folder or dtype they were loaded from: the
study's pin on its weights (``sweep.identity``) and the calibration cache's key
(``sweep.compress.calibration``) are made from it. It imports nothing of the project, so that
the engine and the orchestration can both use it."""

from __future__ import annotations

import hashlib
import json

import torch
from torch import nn


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 naming a model's weights, whatever dtype it was loaded in: every parameter's name
    and shape and a strided sample of its values rounded to bfloat16 (a model loaded in float32
    on a CPU and in bfloat16 on a GPU agree), and its config without the fields that say where
    and how it was loaded."""
    digest = hashlib.sha256(b"sweep-weights-v1")
    config = getattr(model, "config", None)
    if config is not None:
        fields = config.to_dict()
        for loaded_as in ("_name_or_path", "dtype", "torch_dtype", "transformers_version"):
            fields.pop(loaded_as, None)
        digest.update(json.dumps(fields, sort_keys=True, default=str).encode())
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 1024)][:1024]
        digest.update(f"{name}:{tuple(p.shape)}".encode())
        digest.update(sample.to(torch.bfloat16).view(torch.int16).cpu().numpy().tobytes())
    return digest.hexdigest()
