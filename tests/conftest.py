"""Test settings: offline, caches in a temp folder, small thread count."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_CACHE = Path(tempfile.mkdtemp(prefix="sweep-test-hf-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HOME", str(_CACHE))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory) -> Path:
    """The toy model, task and calibration text (see tests/toy.py), built once per session."""
    from .toy import build_toy

    return build_toy(tmp_path_factory.mktemp("toy"))


@pytest.fixture
def one_thread():
    """Small ops in Python loops run faster on one thread than with two fighting a shared CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
