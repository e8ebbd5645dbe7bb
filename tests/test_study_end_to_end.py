"""A two-trial study on the demo model through the command line, then one more on resume."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from .conftest import REPO

SWEEP = [sys.executable, "-m", "sweep.cli"]


@pytest.fixture(scope="module")
def small_demo_spec(tmp_path_factory) -> Path:
    """The demo study with fewer questions per task, so a trial takes seconds."""
    spec = yaml.safe_load((REPO / "studies/demo.yaml").read_text())
    spec["name"] = "e2e"
    spec["evaluation"]["limit"] = 40
    spec["search"]["bits"] = [3, 4, 16]
    path = tmp_path_factory.mktemp("spec") / "e2e.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [*SWEEP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_two_trials_then_resume(small_demo_spec: Path, tmp_path: Path):
    db = tmp_path / "e2e.db"
    url = f"sqlite:///{db}"
    first = _run("run", str(small_demo_spec), "--trials", "2", "--storage", url, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Pareto front" in first.stdout

    study = optuna.load_study(study_name="e2e", storage=url)
    assert study.metric_names == ["SrCr", "TCr"]
    base = study.user_attrs["base_reference"]
    assert set(base["scores"]) == {"demo_recall", "demo_arithmetic", "demo_reasoning"}
    assert all(r == pytest.approx(0.25) for r in base["random_scores"].values())
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    for t in trials:
        a = t.user_attrs
        assert set(a["task_scores"]) == set(base["scores"])
        assert 0.0 <= a["sr"] <= 1.5
        assert t.values[0] == pytest.approx(a["srcr"]) and t.values[1] == pytest.approx(a["tcr"])
        assert a["real_ratio"] >= 1.0
        assert a["perplexity"] > 1.0
        assert {"compress_s", "evaluate_s", "total_s"} <= set(a["timings"])
    assert (tmp_path / "e2e-pareto.html").stat().st_size > 100_000  # plotly.js is inlined

    second = _run("run", str(small_demo_spec), "--trials", "1", "--storage", url, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    study = optuna.load_study(study_name="e2e", storage=url)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    assert study.user_attrs["base_reference"] == base  # evaluated once per study
    assert "evaluating the base model" not in second.stdout


def test_bad_spec_fails_cleanly_and_touches_no_database(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nevaluation: {tasks: [demo_recall]}\nsearch: {bits: [5]}\n")
    url = f"sqlite:///{tmp_path / 'bad.db'}"
    result = _run("run", str(bad), "--storage", url, cwd=tmp_path)
    assert result.returncode == 2
    assert "search.bits" in result.stderr and "allowed" in result.stderr
    assert not (tmp_path / "bad.db").exists()


def test_unknown_task_is_named_with_suggestions(tmp_path: Path, small_demo_spec: Path):
    spec = yaml.safe_load(small_demo_spec.read_text())
    spec["evaluation"]["tasks"] = ["demo_recal"]
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = _run("run", str(path), "--storage", f"sqlite:///{tmp_path / 't.db'}", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown lm-eval task 'demo_recal'" in result.stderr
    assert "demo_recall" in result.stderr
