"""`search.first`: configurations a study runs before any other, whatever its sampler."""

import optuna
import pytest
from optuna.trial import TrialState

from sweep.plan import make_plan
from sweep.space import first_configs, suggest_config
from sweep.spec import SamplerSpec, SearchSpace, SpecError, load_spec

from .helpers import REPO

SPACE = {"sparsity": {"values": [0.0, 0.5]}, "bits": [4, 8, 16], "prune_methods": ["sparsegpt"],
         "quant_methods": ["gptq"], "orders": ["prune_first", "joint"]}  # fmt: skip


@pytest.mark.parametrize(
    "first, message",
    [
        ([{"sparsity": 0.5, "bits": 4}], "search.first[0]: give order"),
        (
            [{"sparsity": 0.5, "bits": 4, "order": "prune_first", "case": "A"}],
            "search.first[0]: case has no effect here",
        ),
        ([{"bits": 3}], "search.first[0]: bits 3 is not in the space: [4, 8, 16]"),
        ([{"bits": 4, "order": "joint"}], "search.first[0]: order has no effect here"),
        ([{"bits": 16}, {"sparsity": 0.25}], "search.first[1]: sparsity 0.25 is not in"),
    ],
)
def test_a_first_configuration_the_space_does_not_hold_is_named(first, message):
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        first_configs(SearchSpace(**SPACE, first=first))


def test_fixed_parameters_may_be_given_or_left_out():
    space = SearchSpace(**SPACE, first=[{"bits": 4, "prune_method": "sparsegpt"}, {"bits": 8}])
    keys = [c.key() for c in first_configs(space)]
    assert keys == ["gptq-w4-g128-asym", "gptq-w8-g128-asym"]
    assert [c.key() for c in first_configs(SearchSpace(**SPACE, first=[{}]))] == ["base"]


@pytest.mark.parametrize("sampler", ["grid", "tpe", "random"])
def test_every_plan_runs_the_first_configurations_first_in_their_order(sampler):
    spec = load_spec(REPO / "studies/smollm2-paper.yaml")
    spec = spec.model_copy(update={"sampler": SamplerSpec(name=sampler, seed=1)})
    plan = make_plan(spec)
    study = optuna.create_study(directions=["maximize"] * 2, sampler=plan.sampler)
    plan.prepare(study)
    expected = [c.key() for c in first_configs(spec.search)]
    asked = []
    for _ in expected:
        trial = study.ask()
        asked.append(suggest_config(trial, spec.search).key())
        study.tell(trial, [1.0, 1.0])
    assert asked == expected
    plan.prepare(study)  # a later run queues none of them again
    queued = study.get_trials(states=(TrialState.WAITING,))
    fixed = [optuna.trial.FixedTrial(t.system_attrs["fixed_params"]) for t in queued]
    assert not {suggest_config(f, spec.search).key() for f in fixed} & set(expected)
