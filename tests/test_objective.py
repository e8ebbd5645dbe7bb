"""Staged evaluation in a study, through the command line: which trials stop after their
sample or before their perplexity, what is stored for them, and that no front, table or export
takes them for measured."""

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweep.evaluation.measurement import Stage
from sweep.evaluation.stages import dominated_by, optimistic
from sweep.plots import pareto_figure
from sweep.record import trial_records
from sweep.report import front, trials_frame

from .conftest import REPO
from .helpers import run_spec, spec_data, sweep

pytestmark = pytest.mark.slow  # whole studies through the CLI

# SparseGPT 50% then 3-bit GPTQ: TCr 0.906, the best SrCr of the demo's paper grid (2.80)
STRONG = {"sparsity": 0.5, "bits": 3}
WEAK = {"sparsity": 0.0, "bits": 8}  # 8-bit GPTQ: TCr 0.5, SrCr 1.33


@pytest.fixture(scope="module")
def staged_study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("staged")
    spec = spec_data(REPO / "studies/demo.yaml")
    spec["name"] = "staged"
    spec["evaluation"]["stages"] = {"mode": "on", "min_docs": 40, "sample": 40}  # one step
    spec["evaluation"]["limit"] = 150
    spec["search"] = {
        "sparsity": {"values": [0.0, 0.5]}, "patterns": ["unstructured"],
        "prune_methods": ["sparsegpt"], "bits": [3, 8], "group_sizes": [128],
        "quant_methods": ["gptq"], "orders": ["prune_first"], "cases": ["B"],
        "first": [STRONG, WEAK],
    }  # fmt: skip
    spec["sampler"] = {"name": "grid", "seed": 0}
    spec["trials"] = 4
    url, done = run_spec(spec, folder, "--no-progress")
    return url, folder, done.stdout


def test_trials_dominated_in_their_best_case_stop_after_their_sample(staged_study):
    url, _, stdout = staged_study
    study = optuna.load_study(study_name="staged", storage=url)
    records = trial_records(study)
    assert len(records) == 4 and all(r.state == TrialState.COMPLETE for r in records)
    full = [r for r in records if r.measurement.stage == Stage.FULL]
    stopped = [r for r in records if r.measurement.stage == Stage.SAMPLE]
    assert records[0].config.sparsity == 0.5 and records[0].measurement.stage == Stage.FULL
    # what search.first names is always evaluated in full, dominated or not
    assert records[1].config.bits == 8 and records[1].measurement.stage == Stage.FULL
    weak, strong = records[1].measurement, records[0].measurement
    assert weak.srcr < strong.srcr and weak.tcr < strong.tcr
    assert stopped, "the demo's strong first trial should dominate some others"
    front_points = [(r.measurement.srcr, r.measurement.tcr) for r in full]
    for r in stopped:
        m = r.measurement
        assert m.perplexity is None and m.kl is not None
        assert m.sr_low <= m.sr <= m.sr_high
        best = optimistic(m, r.config)
        assert dominated_by((best.srcr, best.tcr), front_points)
        # the sampler learns from it: a complete trial with its estimated values
        trial = study.trials[r.number]
        assert trial.values == pytest.approx([m.srcr, m.tcr])
    for r in full:
        assert r.measurement.perplexity is not None and r.measurement.kl is not None
    assert "stopped after its sample" in stdout


def test_trials_dominated_once_exact_stop_before_their_perplexity(staged_study):
    url, _, stdout = staged_study
    study = optuna.load_study(study_name="staged", storage=url)
    records = trial_records(study)
    full = [r.measurement for r in records if r.measurement.stage == Stage.FULL]
    exact = [r for r in records if r.measurement.stage == Stage.TASKS]
    assert exact, "a trial whose sample left it a chance should still be dominated once exact"
    for r in exact:
        m = r.measurement
        assert m.perplexity is None and m.kl is not None
        assert m.sr_low < m.sr < m.sr_high  # exact, with its 95% interval
        assert dominated_by((m.srcr, m.tcr), [(f.srcr, f.tcr) for f in full])
        assert study.trials[r.number].values == pytest.approx([m.srcr, m.tcr])
        assert "perplexity_s" not in m.timings and m.timings["rest_s"] > 0
    assert "stopped before its perplexity" in stdout


def test_stopped_trials_are_never_on_the_front_nor_exported(staged_study):
    url, folder, _ = staged_study
    study = optuna.load_study(study_name="staged", storage=url)
    df = trials_frame(study)
    assert set(df["stage"]) == {Stage.FULL, Stage.SAMPLE, Stage.TASKS}
    assert set(front(df)["stage"]) == {Stage.FULL}
    # drawn hollow, and the hover says where each stopped
    fig = pareto_figure(df, "tcr", "srcr", front(df))
    drawn = {}
    for trace in fig.data[:-1]:  # the last trace is the front's line
        for symbol, text in zip(trace.marker.symbol, trace.text, strict=True):
            drawn[int(text.split("</b>")[0].split()[-1])] = (symbol, text)
    for _, row in df.iterrows():
        symbol, text = drawn[int(row["trial"])]
        assert (symbol == "circle-open") == (row["stage"] != Stage.FULL)
        if row["stage"] != Stage.FULL:
            assert Stage(row["stage"]).stopped in text
    for stage, says in ((Stage.SAMPLE, "stopped after its sample"), (Stage.TASKS, "no perplexity")):
        stopped = int(df[df["stage"] == stage]["trial"].iloc[0])
        done = sweep(
            "export", "--storage", url, "--study-name", "staged", "--trial", str(stopped),
            "--out", str(folder / "out"), cwd=folder,
        )  # fmt: skip
        assert done.returncode == 2
        assert says in done.stdout + done.stderr
        assert not (folder / "out").exists()


def test_a_study_evaluating_in_full_recomputes_what_another_stopped(staged_study):
    url, folder, _ = staged_study
    spec = yaml.safe_load((folder / "staged.yaml").read_text())
    spec["name"] = "in-full"
    spec["evaluation"]["stages"] = {"mode": "off"}  # same documents, so results are shared
    run_spec(spec, folder, "--no-progress", url=url)
    first = {r.config_key: r for r in trial_records(optuna.load_study(study_name="staged",
                                                                      storage=url))}  # fmt: skip
    second = trial_records(optuna.load_study(study_name="in-full", storage=url))
    assert len(second) == 4
    for r in second:
        assert r.measurement.stage == Stage.FULL
        stopped_before = first[r.config_key].measurement.stage != Stage.FULL
        assert r.reused == (not stopped_before)  # a stopped result is computed again in full
        if not stopped_before:
            assert r.measurement == first[r.config_key].measurement
