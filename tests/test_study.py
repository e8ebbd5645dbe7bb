"""What a stored study keeps of its spec: the fields that give its trials their meaning."""

from __future__ import annotations

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweep.spec import StagesSpec, parse_spec
from sweep.study import SpecChangedError, check_spec_unchanged, open_study

from .helpers import sweep
from .toy import toy_spec


def test_a_study_refuses_a_changed_space_but_not_a_changed_size_limit_or_first(toy_dir, tmp_path):
    data = yaml.safe_load(toy_spec(toy_dir, "kept").read_text())
    study = open_study(parse_spec(data), f"sqlite:///{tmp_path / 'kept.db'}")
    roomier = {**data["search"], "max_configurations": 10**6, "first": [{"bits": 4}]}
    check_spec_unchanged(study, parse_spec({**data, "search": roomier}))
    narrower = {**data["search"], "bits": [4, 16]}
    with pytest.raises(SpecChangedError, match=r"search.bits: \[2, 3, 4, 8, 16\] -> \[4, 16\]"):
        check_spec_unchanged(study, parse_spec({**data, "search": narrower}))


@pytest.mark.slow  # a study through the CLI
def test_a_new_sample_that_draws_the_stored_samples_is_no_change(toy_dir, tmp_path):
    # a study created when the default sample was [50, 100, 200, 400] runs on under a default
    # whose further steps (800, 1600) end past its task of 768 documents; a sample that draws
    # other documents is refused
    data = yaml.safe_load(toy_spec(toy_dir, "upgraded").read_text())
    url = f"sqlite:///{tmp_path / 'upgraded.db'}"
    spec = tmp_path / "upgraded.yaml"

    def run(sample: list[int] | None):
        stages = {"mode": "on", **({"sample": sample} if sample else {})}
        spec.write_text(
            yaml.safe_dump({**data, "evaluation": {**data["evaluation"], "stages": stages}})
        )
        return sweep("run", str(spec), "--trials", "1", "--storage", url, cwd=tmp_path)

    first = run([50, 100, 200, 400])
    assert first.returncode == 0, first.stdout + first.stderr
    study = optuna.load_study(study_name="upgraded", storage=url)
    assert study.user_attrs["spec"]["evaluation"]["stages"]["sample"] == [50, 100, 200, 400]
    assert StagesSpec().sample != [50, 100, 200, 400]

    later = run(None)  # the default
    assert later.returncode == 0, later.stdout + later.stderr
    study = optuna.load_study(study_name="upgraded", storage=url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len([t for t in complete if not t.user_attrs.get("reused")]) == 2

    other = run([100, 300])
    assert other.returncode != 0
    assert (
        "evaluation.stages.sample: [50, 100, 200, 400] -> [100, 300]" in other.stdout + other.stderr
    )
    assert len(optuna.load_study(study_name="upgraded", storage=url).trials) == len(study.trials)
