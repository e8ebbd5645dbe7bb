"""`sweep report` on a small demo study: its files, and a table that matches the stored trials."""

from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from sweep.plots import chromium_path

from .helpers import REPO, sweep


def _stored(url: str, name: str) -> dict[str, dict]:
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    return {t.user_attrs["config_key"]: t.user_attrs for t in trials}


def _retention(attrs: dict, base: dict, task: str) -> float:
    r = base["random_scores"][task]
    n = (attrs["task_scores"][task] - r) / (1 - r)
    return max(0.0, n) / ((base["scores"][task] - r) / (1 - r))


@pytest.fixture(scope="module")
def report(demo_grid_study) -> tuple[Path, str, dict]:
    url, name, folder = demo_grid_study
    out = folder / "report"
    done = sweep("report", "--storage", url, "--study-name", name, "--out", str(out), cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    return out, done.stdout, _stored(url, name)


def test_report_writes_plots_table_and_csv(report):
    out, stdout, stored = report
    for stem in ("pareto-srcr", "pareto-sr"):
        html = (out / f"{stem}.html").read_text()
        assert len(html) > 1_000_000  # plotly.js inlined: opens offline
        assert "magnitude-50% rtn-w8-g128-asym prune_first-caseB" in html  # hover: full config
        assert "quantization only" in html and "Pareto front" in html
        png = out / f"{stem}.png"
        if chromium_path():
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        else:
            assert not png.exists()
    if not chromium_path():
        assert "PNG skipped" in stdout and "chromium" in stdout
    assert "Pareto front" in stdout and "Quantization only vs pruning" in stdout

    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == len(stored) == 6
    for _, row in trials.iterrows():
        attrs = stored[row["config"]]
        assert row["state"] == "COMPLETE"
        assert row["srcr"] == pytest.approx(attrs["srcr"])
        assert row["real_ratio"] == pytest.approx(attrs["real_ratio"])
        for task, score in attrs["task_scores"].items():
            assert row[f"score:{task}"] == pytest.approx(score)


def test_paper_table_matches_the_stored_trials(report, demo_grid_study):
    out, _, stored = report
    url, name, _ = demo_grid_study
    base = optuna.load_study(study_name=name, storage=url).user_attrs["base_reference"]
    table = pd.read_csv(out / "paper-table.csv")
    # quantization alone reaches TCr 50% (8 bits) and 75% (4 bits); 50% pruning + 8 bits is
    # also 75%; 50% + 4 bits (87.5%) has no quantization-only point to compare with
    assert list(table["tcr"]) == [0.5, 0.75]
    quant8, quant4 = stored["rtn-w8-g128-asym"], stored["rtn-w4-g128-asym"]
    joint = stored["magnitude-50% rtn-w8-g128-asym prune_first-caseB"]
    low, high = table.iloc[0], table.iloc[1]
    assert low["quant_config"] == "rtn-w8-g128-asym" and pd.isna(low["joint_config"])
    assert low["quant_sr"] == pytest.approx(quant8["sr"])
    assert high["quant_config"] == "rtn-w4-g128-asym"
    assert high["joint_config"] == "magnitude-50% rtn-w8-g128-asym prune_first-caseB"
    assert high["quant_sr"] == pytest.approx(quant4["sr"])
    assert high["joint_sr"] == pytest.approx(joint["sr"])
    assert high["rel_diff"] == pytest.approx(joint["sr"] / quant4["sr"] - 1)
    for task in base["scores"]:
        assert high[f"quant_sr:{task}"] == pytest.approx(_retention(quant4, base, task))
        assert high[f"joint_sr:{task}"] == pytest.approx(_retention(joint, base, task))
    markdown = (out / "paper-table.md").read_text()
    assert markdown.count("\n") == 2 + len(table)
    assert f"{joint['sr']:.3f}" in markdown


def test_report_on_a_missing_study_says_so(tmp_path):
    url = f"sqlite:///{tmp_path / 'none.db'}"
    done = sweep("report", str(REPO / "studies/demo.yaml"), "--storage", url, cwd=tmp_path)
    assert done.returncode == 2
    assert "no study database" in done.stderr
    assert not (tmp_path / "none.db").exists()
