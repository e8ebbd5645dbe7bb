"""The grid plan: one queued trial per distinct configuration, the study covered once all are
done, and the queue refilled only with what is missing."""

import optuna
import pytest
from optuna.trial import TrialState

from sweep.grid import queue_missing, space_covered
from sweep.space import all_configs, suggest_config
from sweep.spec import load_spec
from sweep.study import make_sampler

from .helpers import REPO


@pytest.mark.parametrize("spec_file", ["demo-paper.yaml", "paper.yaml"])
def test_the_grid_visits_each_distinct_configuration_once(spec_file):
    spec = load_spec(REPO / "studies" / spec_file)
    study = optuna.create_study(directions=["maximize"] * 2, sampler=make_sampler(spec))
    expected = sorted(c.key() for c in all_configs(spec.search))
    assert queue_missing(study, spec) == len(expected) == spec.trials  # the spec asks for all
    assert queue_missing(study, spec) == 0  # already queued
    keys = []

    def objective(trial):
        keys.append(suggest_config(trial, spec.search).key())
        trial.set_user_attr("config_key", keys[-1])
        return 1.0, 1.0

    study.optimize(objective, n_trials=len(expected) - 1)
    assert not space_covered(study, spec)
    study.optimize(objective, n_trials=1)
    assert sorted(keys) == expected
    assert space_covered(study, spec)


def test_configurations_not_done_are_queued_again():
    spec = load_spec(REPO / "studies/paper.yaml")
    study = optuna.create_study(directions=["maximize"] * 2, sampler=make_sampler(spec))
    queue_missing(study, spec)

    def fails(trial, reason: dict):
        trial.set_user_attr("config_key", suggest_config(trial, spec.search).key())
        for k, v in reason.items():
            trial.set_user_attr(k, v)
        raise RuntimeError("no")

    # its own failure: done; Ctrl-C, or a death without a reason: to be tried again
    study.optimize(lambda t: fails(t, {"fail_reason": "RuntimeError: no"}), n_trials=1,
                   catch=(RuntimeError,))  # fmt: skip
    study.optimize(lambda t: fails(t, {"fail_reason": "KeyboardInterrupt: ", "interrupted": True}),
                   n_trials=1, catch=(RuntimeError,))  # fmt: skip
    study.optimize(lambda t: fails(t, {}), n_trials=1, catch=(RuntimeError,))
    assert len(study.get_trials(states=(TrialState.FAIL,))) == 3
    assert queue_missing(study, spec) == 2
    assert len(study.get_trials(states=(TrialState.WAITING,))) == spec.trials - 3 + 2
