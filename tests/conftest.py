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

if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    # workers share the cores: one thread each, or they fight over them
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory) -> Path:
    """The toy model, task and calibration text (see tests/toy.py), built once per session."""
    from .toy import build_toy

    return build_toy(tmp_path_factory.mktemp("toy"))


PG_URL = os.environ.get("SWEEP_TEST_POSTGRES")


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL database for one test (CI starts the server: see .ci/run)."""
    import uuid

    import sqlalchemy as sa

    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("CI must provide PostgreSQL through SWEEP_TEST_POSTGRES")
        pytest.skip("no PostgreSQL: set SWEEP_TEST_POSTGRES (see .ci/run)")
    name = f"sweep_test_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield PG_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


@pytest.fixture
def one_thread():
    """Small ops in Python loops run faster on one thread than with two fighting a shared CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def demo_grid_study(tmp_path_factory) -> tuple[str, str, Path]:
    """A small study on the demo model, run through the command line once per session: the grid
    sparsity {0, 50%} x bits {4, 8, 16} (magnitude, RTN), so it holds quantization-only, pruning-
    only and joint trials. Returns (storage URL, study name, folder)."""
    from .helpers import run_spec, spec_data

    folder = tmp_path_factory.mktemp("demo-grid")
    spec = spec_data(REPO / "studies/demo.yaml")
    spec["name"] = "demo-grid"
    spec["evaluation"]["limit"] = 60
    spec["search"] = {
        "sparsity": {"low": 0.0, "high": 0.5, "step": 0.5}, "patterns": ["unstructured"],
        "prune_methods": ["magnitude"], "bits": [4, 8, 16], "group_sizes": [128],
        "quant_methods": ["rtn"], "orders": ["prune_first"], "cases": ["B"],
    }  # fmt: skip
    spec["sampler"] = {"name": "grid", "seed": 0}
    spec["trials"] = 6
    url, _ = run_spec(spec, folder, "--no-progress")
    return url, "demo-grid", folder
