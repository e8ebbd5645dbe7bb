"""`make dashboard` serves a study's storage with optuna-dashboard on 127.0.0.1."""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from .conftest import REPO

pytestmark = pytest.mark.slow  # a study, then the dashboard server on it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_dashboard_serves_the_study(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'dash.db'}"
    study = optuna.create_study(study_name="demo", storage=url, directions=["maximize"] * 2)
    study.set_metric_names(["SrCr", "TCr"])
    study.add_trial(
        optuna.trial.create_trial(
            params={"bits": 4},
            distributions={"bits": optuna.distributions.CategoricalDistribution([4, 16])},
            values=[1.2, 0.75],
            user_attrs={"sr": 0.6},
        )
    )
    port = _free_port()
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "dashboard", f"STORAGE={url}", f"PORT={port}"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        body = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    body = json.load(r)
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                time.sleep(0.5)
        assert body is not None, "the dashboard did not answer within 60 s"
        studies = body["study_summaries"]
        assert [s["study_name"] for s in studies] == ["demo"]
        assert studies[0]["directions"] == ["maximize", "maximize"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)  # about a second, far more on a loaded machine
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
