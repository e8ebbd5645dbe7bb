"""Calibration samples as token ids, from a local text file, a dataset or a Python function."""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

from sweep.errors import UserError
from sweep.spec import CalibrationSpec


class CalibrationError(UserError, ValueError):
    """Calibration text that is missing, empty, or too short for one sample."""


def _texts(spec: CalibrationSpec) -> list[str]:
    if spec.source == "dataset":
        from datasets import load_dataset

        data = load_dataset(spec.dataset, spec.dataset_config, split=spec.split, streaming=True)
        texts = []
        for row in data:
            texts.append(row[spec.text_field])
            if len(texts) >= spec.samples * 4:
                break
        return texts
    if spec.source == "function":
        return _function_texts(spec.function or "")
    path = Path(spec.path)
    if not path.is_file():
        raise CalibrationError(f"calibration file {path} does not exist")
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise CalibrationError(f"calibration file {path} is empty")
    return lines


def _function_texts(name: str) -> list[str]:
    """The texts ``module:callable`` returns."""
    module_name, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise CalibrationError(f"calibration function {name}: {err}") from None
    texts = [t for t in fn() if isinstance(t, str) and t.strip()]
    if not texts:
        raise CalibrationError(f"calibration function {name} returned no text")
    return texts


def calibration_batches(spec: CalibrationSpec, tokenizer) -> torch.Tensor:
    """``spec.samples`` windows of ``spec.seq_len`` tokens: (samples, seq_len), deterministic.

    The texts are joined into one token stream and cut into consecutive windows, so short lines
    (the demo corpus) and long documents are used alike.
    """
    texts = _texts(spec)
    sep = tokenizer.eos_token or "\n"
    ids = tokenizer(sep.join(texts), add_special_tokens=False, verbose=False)["input_ids"]
    n = len(ids) // spec.seq_len
    if n == 0:
        raise CalibrationError(
            f"calibration text has {len(ids)} tokens, fewer than one sample of seq_len "
            f"{spec.seq_len}"
        )
    windows = torch.tensor(ids[: n * spec.seq_len]).view(n, spec.seq_len)
    return windows[: spec.samples]
