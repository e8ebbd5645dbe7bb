"""The trial record: what a trial stores and reads back, through a real Optuna study."""

import optuna
import pytest
from optuna.trial import TrialState

from sweep.compress import CompressionConfig
from sweep.evaluation.measurement import Measurement
from sweep.metrics import BOUNDED, METRICS, OBJECTIVES
from sweep.record import TrialRecord, measured_records, trial_records
from sweep.spec import OBJECTIVES as SPEC_OBJECTIVES

MEASURED = Measurement(
    measured_sparsity=0.5, zero_fraction=0.5, tcr=0.875, real_ratio=3.9, sr=0.8, srcr=2.26,
    perplexity=6.1, task_scores={"a": 0.7, "b": 0.6}, timings={"evaluate_s": 1.5},
    deployable=True, deploy_reason="50% sparsity: vllm serves it dense, no bytes saved",
    deploy_ratio=3.9,
)  # fmt: skip
CONFIG = CompressionConfig(sparsity=0.5, bits=4, prune_method="sparsegpt", quant_method="gptq")


def test_a_stored_record_reads_back_the_same():
    study = optuna.create_study(directions=["maximize", "maximize"])
    trial = study.ask()
    record = TrialRecord(trial.number, TrialState.COMPLETE, CONFIG, MEASURED, worker="w1",
                         reused=True)  # fmt: skip
    record.store(trial)
    trial.set_constraint("tcr.max", -0.1)
    study.tell(trial, [MEASURED.srcr, MEASURED.tcr])
    failing = study.ask()
    TrialRecord(failing.number, TrialState.FAIL, CONFIG, fail_reason="KeyboardInterrupt: ",
                interrupted=True).store(failing)  # fmt: skip
    study.tell(failing, state=TrialState.FAIL)

    back, failed = trial_records(study)
    assert back == TrialRecord(0, TrialState.COMPLETE, CONFIG, MEASURED, {"tcr.max": -0.1}, "w1",
                               reused=True)  # fmt: skip
    assert back.feasible and back.measured and back.config_key == CONFIG.key()
    assert failed.interrupted and failed.fail_reason == "KeyboardInterrupt: "
    assert not failed.measured and failed.measurement is None
    assert [r.number for r in measured_records(study)] == [0]


def test_trials_stored_before_the_measured_sparsity_had_its_name_still_read():
    old = {**MEASURED.to_dict(), "sparsity": 0.25, "config_key": "x", "bits": 4}
    del old["measured_sparsity"]
    assert Measurement.from_dict(old).measured_sparsity == 0.25


def test_an_infeasible_trial_says_so():
    record = TrialRecord(0, TrialState.COMPLETE, CONFIG, MEASURED, {"sr.min": 0.05})
    assert not record.feasible


def test_the_metric_table_covers_what_specs_and_records_name():
    assert set(SPEC_OBJECTIVES) == set(OBJECTIVES) == {
        "srcr", "sr", "tcr", "real_ratio", "deploy_ratio"
    }  # fmt: skip
    assert set(BOUNDED) == {"sr", "tcr", "real_ratio", "deploy_ratio"}
    assert set(METRICS) <= set(MEASURED.to_dict())
    labels = [m.label for m in METRICS.values()]
    assert len(labels) == len(set(labels))
    assert METRICS["real_ratio"].show(3.94) == "3.94x"
    assert METRICS["sr"].show(None) == "–"


@pytest.mark.parametrize("metric", sorted(OBJECTIVES))
def test_every_objective_is_a_number_of_a_measurement(metric):
    assert isinstance(MEASURED.value(metric), float)


def test_a_record_read_while_it_is_being_stored_never_holds_half_a_measurement():
    """Another worker may read a trial between any two of its attributes being written."""
    study = optuna.create_study(directions=["maximize", "maximize"])
    trial = study.ask()
    seen = []

    class ReadAfterEachWrite:  # the real trial; after each attribute, read it back as a reader
        def set_user_attr(self, key, value):
            trial.set_user_attr(key, value)
            seen.append(TrialRecord.from_trial(study.trials[trial.number]).measurement)

    TrialRecord(trial.number, TrialState.RUNNING, CONFIG, MEASURED).store(ReadAfterEachWrite())
    assert seen[-1] == MEASURED
    assert all(m is None for m in seen[:-1])


def test_a_non_uniform_plan_is_stored_with_its_trial_and_summarised():
    from dataclasses import replace

    plan = {"l0.q": [0.42, 3], "l0.up": [0.58, 4], "l1.q": [0.5, 4], "l1.up": [0.5, 2]}
    measured = replace(MEASURED, layers=plan, capacity=0.354)
    study = optuna.create_study(directions=["maximize", "maximize"])
    trial = study.ask()
    TrialRecord(trial.number, TrialState.COMPLETE, CONFIG, measured).store(trial)
    study.tell(trial, [measured.srcr, measured.tcr])
    (back,) = trial_records(study)
    assert back.measurement == measured
    summary = "bits 2:25% 3:25% 4:50%; sparsity 0.42-0.58"
    assert measured.layer_summary == summary
    assert study.trials[0].user_attrs["per_layer"] == summary  # what the dashboard shows
    assert replace(MEASURED).layer_summary == "" and "per_layer" not in TrialRecord(
        0, TrialState.COMPLETE, CONFIG, MEASURED).to_user_attrs()  # fmt: skip
