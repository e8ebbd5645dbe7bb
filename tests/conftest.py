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
