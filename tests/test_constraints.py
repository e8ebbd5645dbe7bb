"""A study with a constraint (TCr at most 0.8): every trial carries Optuna constraint values, and
the infeasible ones stay out of the front, Optuna's best trials and the default export, and are
drawn apart in the plots."""

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweep.plots import INFEASIBLE
from sweep.report import front, trials_frame

from .helpers import run_spec, sweep
from .toy import toy_spec

pytestmark = pytest.mark.slow  # whole studies through the CLI

TCR_MAX = 0.8  # 4-, 8- and 16-bit (TCr 0.75, 0.5, 0) meet it; 2-bit (0.875) does not


@pytest.fixture(scope="module")
def constrained_study(toy_dir: Path, tmp_path_factory) -> tuple[str, optuna.Study, Path]:
    folder = tmp_path_factory.mktemp("constrained")
    path = toy_spec(
        toy_dir,
        "constrained",
        sparsity={"values": [0.0]},
        bits=[2, 4, 8, 16],
        orders=["prune_first"],
    )
    spec = yaml.safe_load(path.read_text())
    spec["sampler"] = {"name": "grid", "seed": 0}
    spec["constraints"] = {"tcr": {"max": TCR_MAX}}
    url, done = run_spec(spec, folder, "--trials", "4")
    assert "grid: 4 distinct configurations, each visited once" in done.stdout
    return url, optuna.load_study(study_name="constrained", storage=url), folder


def _bits(trials) -> set[int]:
    return {t.user_attrs["config"]["bits"] for t in trials}


def test_each_trial_stores_how_far_it_misses_the_band(constrained_study):
    _, study, _ = constrained_study
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.user_attrs["config"]["bits"] for t in trials) == [2, 4, 8, 16]
    for t in trials:
        assert t.constraints == pytest.approx({"tcr.max": t.user_attrs["tcr"] - TCR_MAX})
    assert _bits(t for t in trials if t.constraints["tcr.max"] <= 0) == {4, 8, 16}
    assert 2 not in _bits(study.best_trials)


def test_front_and_plot_set_infeasible_trials_apart(constrained_study):
    url, study, folder = constrained_study
    df = trials_frame(study)
    assert dict(zip(df["bits"], df["feasible"], strict=True)) == {
        2: False, 4: True, 8: True, 16: True,
    }  # fmt: skip
    # 2-bit has the highest TCr: without the constraint it would be on the front.
    assert 2 in set(front(df.assign(feasible=True))["bits"])
    assert 2 not in set(front(df)["bits"]) and not front(df).empty
    done = sweep("report", "--storage", url, "--study-name", "constrained", "--no-png",
                 "--out", str(folder / "report"), cwd=folder)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert INFEASIBLE in (folder / "report" / "pareto-srcr.html").read_text()


def test_default_export_is_the_best_feasible_trial(constrained_study):
    url, study, folder = constrained_study
    out = folder / "export"
    done = sweep("export", "--storage", url, "--study-name", "constrained", "--out", str(out),
                 "--no-progress", cwd=folder)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    chosen = json.loads((out / "measurements.json").read_text())["source"]["trial"]
    feasible = [t for t in study.get_trials(states=(TrialState.COMPLETE,))
                if t.constraints["tcr.max"] <= 0]  # fmt: skip
    assert chosen == max(feasible, key=lambda t: t.user_attrs["srcr"]).number


def test_status_counts_the_trials_outside(constrained_study):
    url, _, folder = constrained_study
    done = sweep("status", "--storage", url, "--study-name", "constrained", cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "outside the study's constraints: 1 complete" in done.stdout
    assert "4 complete trials: 4 distinct configurations, 0 trials reused" in done.stdout
