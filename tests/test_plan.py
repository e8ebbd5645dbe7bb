"""Search plans: the grid visits each distinct configuration once and queues again only what is
missing; every sampler a spec may name has a plan, seeded per worker."""

import optuna
import pytest
from optuna.trial import TrialState

from sweep.plan import PLANS, GridPlan, Step, make_plan
from sweep.space import all_configs, suggest_config
from sweep.spec import SAMPLERS, SamplerSpec, load_spec

from .helpers import REPO


def _study(plan) -> optuna.Study:
    return optuna.create_study(directions=["maximize"] * 2, sampler=plan.sampler)


@pytest.mark.parametrize("spec_file", ["demo-paper.yaml", "paper.yaml"])
def test_the_grid_visits_each_distinct_configuration_once(spec_file):
    spec = load_spec(REPO / "studies" / spec_file)
    plan = make_plan(spec)
    study = _study(plan)
    expected = sorted(c.key() for c in all_configs(spec.search))
    assert (
        plan.prepare(study) == f"grid: {len(expected)} distinct configurations, each visited once"
    )
    assert len(study.get_trials(states=(TrialState.WAITING,))) == len(expected) == spec.trials
    assert plan.queue_missing(study) == 0  # already queued
    keys = []

    def objective(trial):
        keys.append(suggest_config(trial, spec.search).key())
        trial.set_user_attr("config", suggest_config(trial, spec.search).to_dict())
        return 1.0, 1.0

    study.optimize(objective, n_trials=len(expected) - 1)
    assert plan.next(study) is Step.RUN and not plan.exhausted(study)
    study.optimize(objective, n_trials=1)
    assert sorted(keys) == expected
    assert plan.exhausted(study) and plan.next(study) is Step.STOP


def test_configurations_not_done_are_queued_again():
    spec = load_spec(REPO / "studies/paper.yaml")
    plan = make_plan(spec)
    study = _study(plan)
    plan.prepare(study)

    def fails(trial, reason: dict):
        trial.set_user_attr("config", suggest_config(trial, spec.search).to_dict())
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
    assert plan.queue_missing(study) == 2
    assert len(study.get_trials(states=(TrialState.WAITING,))) == spec.trials - 3 + 2


def test_a_grid_whose_rest_runs_elsewhere_waits():
    spec = load_spec(REPO / "studies/demo-paper.yaml")
    plan = make_plan(spec)
    study = _study(plan)
    plan.prepare(study)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    for _ in waiting:  # other workers took every queued configuration and are running them
        trial = study.ask()
        trial.set_user_attr("config", suggest_config(trial, spec.search).to_dict())
    assert plan.next(study) is Step.WAIT
    assert not plan.exhausted(study)


def test_every_sampler_has_a_plan_seeded_per_worker():
    assert set(PLANS) == set(SAMPLERS)
    spec = load_spec(REPO / "studies/demo.yaml")
    for name in SAMPLERS:
        named = spec.model_copy(update={"sampler": SamplerSpec(name=name, seed=7)})
        first, third = make_plan(named, worker=0), make_plan(named, worker=2)
        assert (first.seed, third.seed) == (7, 9)
        assert isinstance(first.sampler, optuna.samplers.BaseSampler)
        assert isinstance(first, GridPlan) == (name == "grid")
        assert first.next(_study(first)) is Step.RUN or name == "grid"
