"""The grid sampler's plan: every distinct configuration of the space is queued once (Optuna's
``enqueue_trial``), in an order shuffled by the sampler's seed, and the study ends when each has
a finished trial. Workers take queued trials first, so they share the plan through the storage."""

from __future__ import annotations

import random

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.space import all_configs, config_params, suggest_config
from sweep.spec import StudySpec

INTERRUPTED_ATTR = "interrupted"


def _config_key(trial: FrozenTrial, spec: StudySpec) -> str | None:
    if "config_key" in trial.user_attrs:
        return trial.user_attrs["config_key"]
    fixed = trial.system_attrs.get("fixed_params")  # a queued trial not started yet
    if fixed is None:
        return None
    return suggest_config(optuna.trial.FixedTrial(fixed), spec.search).key()


def _done(trial: FrozenTrial) -> bool:
    """Complete, or failed by its own configuration (not a dead worker, not Ctrl-C)."""
    if trial.state == TrialState.COMPLETE:
        return True
    own_failure = "fail_reason" in trial.user_attrs and INTERRUPTED_ATTR not in trial.user_attrs
    return trial.state == TrialState.FAIL and own_failure


def _progress(study: optuna.Study, spec: StudySpec) -> tuple[set[str], set[str]]:
    """The configurations done, and those running or queued, by key."""
    done, pending = set(), set()
    for t in study.get_trials(deepcopy=False):
        key = _config_key(t, spec)
        if key is None:
            continue
        if _done(t):
            done.add(key)
        elif t.state in (TrialState.RUNNING, TrialState.WAITING):
            pending.add(key)
    return done, pending


def queue_missing(study: optuna.Study, spec: StudySpec) -> int:
    """Queue every configuration that is neither done, running nor queued; return how many."""
    done, pending = _progress(study, spec)
    taken = done | pending
    missing = sorted((c for c in all_configs(spec.search) if c.key() not in taken), key=str)
    random.Random(spec.sampler.seed).shuffle(missing)
    for config in missing:
        study.enqueue_trial(config_params(config, spec.search), skip_if_exists=False)
    return len(missing)


def space_covered(study: optuna.Study, spec: StudySpec) -> bool:
    """True once every configuration of the space is done and nothing is queued."""
    if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        return False
    done, _ = _progress(study, spec)
    return {c.key() for c in all_configs(spec.search)} <= done
