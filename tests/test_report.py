"""`sweep report` on a small demo study: its files, and a table that matches the stored trials."""

import json
import shutil
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from sweep.compress import CompressionConfig
from sweep.evaluation.measurement import Measurement, Stage
from sweep.metrics import capacity_kept, theoretical_compression_rate
from sweep.plots import chromium_path
from sweep.record import TrialRecord
from sweep.report import MANIFEST, front, report_figures, trials_frame

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
        # flips, recovery and the 95% intervals, against the stored base reference
        agreement = attrs["agreement"]
        assert row["flips"] == sum(a["flips"] for a in agreement.values())
        assert row["sr_low"] <= row["sr"] <= row["sr_high"] and row["sr_low"] < row["sr_high"]
        for task, a in agreement.items():
            assert a["documents"] == 60  # the study's limit: every document scored
            assert row[f"recovery:{task}"] == pytest.approx(a["recovery"])
            assert row[f"retention_low:{task}"] <= row[f"retention_high:{task}"]
        if row["config"] == "base":
            assert row["flips"] == 0 and all(a["recovery"] == 1 for a in agreement.values())
    for stem in ("pareto-srcr", "pareto-sr"):  # the front drawn with its intervals
        assert '"error_y"' in (out / f"{stem}.html").read_text()


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
    assert f"{joint['sr']:.3f} ({joint['sr_low']:.3f}-{joint['sr_high']:.3f})" in markdown
    flipped = sum(a["flips"] for a in joint["agreement"].values())
    scored = sum(a["documents"] for a in joint["agreement"].values())
    assert high["joint_flip_rate"] == pytest.approx(flipped / scored)
    assert f"{flipped / scored:.1%}" in markdown and "flips" in markdown


def test_report_on_a_missing_study_says_so(tmp_path):
    url = f"sqlite:///{tmp_path / 'none.db'}"
    done = sweep("report", str(REPO / "studies/demo.yaml"), "--storage", url, cwd=tmp_path)
    assert done.returncode == 2
    assert "no study database" in done.stderr
    assert not (tmp_path / "none.db").exists()


def _staged_study() -> optuna.Study:
    """A study of SrCr and TCr whose trials staged evaluation treated as it does: two full
    trials, one stopped before its perplexity (dominated on SrCr and TCr, but not on Sr and TCr)
    and one stopped after its sample (its Sr an estimate)."""
    study = optuna.create_study(directions=["maximize", "maximize"])
    trials = [  # (sparsity, bits, Sr, stage)
        (0.0, 4, 0.998, Stage.FULL),
        (0.5, 2, 0.45, Stage.FULL),
        (0.25, 3, 0.80, Stage.TASKS),
        (0.25, 4, 0.99, Stage.SAMPLE),
    ]
    for sparsity, bits, sr, stage in trials:
        config = CompressionConfig(sparsity=sparsity, bits=bits)
        tcr = theoretical_compression_rate(sparsity, bits)
        srcr = sr / capacity_kept(sparsity, bits)
        estimated = (
            {"sr_low": sr - 0.02, "sr_high": min(1.0, sr + 0.02)} if stage == Stage.SAMPLE else {}
        )
        measured = Measurement(
            measured_sparsity=sparsity, zero_fraction=sparsity, tcr=tcr, real_ratio=1 / (1 - tcr),
            sr=sr, srcr=srcr, perplexity=12.0 if stage == Stage.FULL else None,
            task_scores={"recall": sr}, stage=stage, **estimated,
        )  # fmt: skip
        trial = study.ask()
        TrialRecord(trial.number, TrialState.COMPLETE, config, measured).store(trial)
        study.tell(trial, [srcr, tcr])
    return study


def test_a_front_of_exact_values_holds_a_trial_stopped_before_its_perplexity():
    df = trials_frame(_staged_study())
    stage = dict(zip(df["trial"], df["stage"], strict=True))
    full = [t for t, s in stage.items() if s == Stage.FULL]
    (tasks,) = [t for t, s in stage.items() if s == Stage.TASKS]
    (sample,) = [t for t, s in stage.items() if s == Stage.SAMPLE]
    # the study's own front (SrCr, TCr) dominated the stopped trials: neither is on it
    assert set(front(df, "tcr", "srcr")["trial"]) <= set(full)
    # Sr against TCr: the trial stopped before its perplexity has an exact Sr that no trial
    # beats, so it is on that front; the one stopped after its sample holds an estimate
    sr_front = front(df, "tcr", "sr")
    assert set(sr_front["trial"]) == {*full, tasks}
    assert sample not in set(sr_front["trial"])

    figure = report_figures(df, "staged")["pareto-sr"]
    (drawn,) = [t for t in figure.data if t.name == "Pareto front"]
    row = df[df["trial"] == tasks].iloc[0]
    assert (row["tcr"], row["sr"]) in set(zip(drawn.x, drawn.y, strict=True))
    assert len(drawn.x) == 3


def test_a_report_replaces_its_own_files_only_and_never_writes_through_a_link(
    report, demo_grid_study, tmp_path
):
    out, _, _ = report
    url, name, _ = demo_grid_study
    again = tmp_path / "again"
    shutil.copytree(out, again)
    manifest = json.loads((again / MANIFEST).read_text())
    (again / "old-plot.html").write_text("from a report of another day")
    manifest["files"].append("old-plot.html")
    (again / MANIFEST).write_text(json.dumps(manifest))
    url_name = ("--storage", url, "--study-name", name)
    done = sweep("report", *url_name, "--out", str(again), "--no-png", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = json.loads((again / MANIFEST).read_text())["files"]
    assert sorted(p.name for p in again.iterdir()) == sorted([*listed, MANIFEST])
    assert "old-plot.html" not in listed and "pareto-sr.html" in listed

    outside = tmp_path / "outside.csv"
    outside.write_text("the user's")
    (again / "trials.csv").unlink()
    (again / "trials.csv").symlink_to(outside)
    done = sweep("report", *url_name, "--out", str(again), "--no-png", cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "trials.csv is a symbolic link" in done.stderr
    assert outside.read_text() == "the user's"

    (again / "trials.csv").unlink()
    (again / "notes.md").write_text("mine")
    done = sweep("report", *url_name, "--out", str(again), "--no-png", cwd=tmp_path)
    assert done.returncode == 2 and "holds notes.md, which the earlier report" in done.stderr
    assert (again / "notes.md").read_text() == "mine"
