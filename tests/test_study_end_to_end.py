"""A two-trial study on the demo model through the command line, then one more on resume."""

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from .helpers import REPO, spec_data, sweep
from .toy import toy_spec

pytestmark = pytest.mark.slow  # whole studies through the CLI


@pytest.fixture(params=["demo", "toy"])
def small_spec(request, tmp_path_factory) -> Path:
    """The demo study (its methods need calibration) with fewer questions and bit-widths, and
    the same search on the toy model."""
    spec = spec_data(REPO / "studies/demo.yaml")
    spec["evaluation"]["limit"] = 40
    spec["search"]["bits"] = [3, 4, 16]
    if request.param == "toy":
        toy = yaml.safe_load(toy_spec(request.getfixturevalue("toy_dir"), "toy-e2e").read_text())
        spec["search"]["group_sizes"] = [32]
        spec = {**spec, **{k: toy[k] for k in ("model", "calibration", "evaluation")}}
    spec["name"] = "e2e"
    path = tmp_path_factory.mktemp("spec") / "e2e.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_two_trials_then_resume(small_spec: Path, tmp_path: Path):
    db = tmp_path / "e2e.db"
    url = f"sqlite:///{db}"
    first = sweep("run", str(small_spec), "--trials", "2", "--storage", url, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Pareto front" in first.stdout

    study = optuna.load_study(study_name="e2e", storage=url)
    assert study.metric_names == ["SrCr", "TCr"]
    base = study.user_attrs["base_reference"]
    tasks = yaml.safe_load(small_spec.read_text())["evaluation"]["tasks"]
    assert set(base["scores"]) == {t if isinstance(t, str) else t["name"] for t in tasks}
    assert all(r == pytest.approx(0.25) for r in base["random_scores"].values())
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2
    for t in trials:
        a = t.user_attrs
        assert set(a["task_scores"]) == set(base["scores"])
        assert 0.0 <= a["sr"] <= 1.5
        assert t.values[0] == pytest.approx(a["srcr"]) and t.values[1] == pytest.approx(a["tcr"])
        assert a["real_ratio"] >= 1.0
        assert a["perplexity"] is None or a["perplexity"] > 1.0
        assert {"compress_s", "evaluate_s", "total_s"} <= set(a["timings"])
    assert (tmp_path / "e2e-pareto.html").stat().st_size > 100_000  # plotly.js is inlined

    second = sweep("run", str(small_spec), "--trials", "1", "--storage", url, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    study = optuna.load_study(study_name="e2e", storage=url)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 3
    assert study.user_attrs["base_reference"] == base  # evaluated once per study
    assert "evaluating the base model" not in second.stdout

    status = sweep("status", str(small_spec), "--storage", url, cwd=tmp_path)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "3 complete" in status.stdout and "1 of 1 new configurations computed" in status.stdout
    assert "Pareto front" in status.stdout
