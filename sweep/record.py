"""A trial as stored: ``TrialRecord`` is a stored Optuna trial as the rest of the tool reads it,
its configuration, its measurement (``sweep.evaluation.measurement``) and what happened to it.
``to_user_attrs`` and ``from_trial`` are the only code that knows the names of the trials' user
attributes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.compress.config import CompressionConfig
from sweep.evaluation.measurement import Measurement
from sweep.spec import meets_constraints

# The trials' user attributes. Besides these, a measured trial holds Measurement's fields.
_CONFIG = "config"
_CONFIG_KEY = "config_key"  # config.key(), for people reading the dashboard and for lookups
_WORKER = "worker"
_RUN = "run"
_REUSED = "reused"
_FAIL_REASON = "fail_reason"
_INTERRUPTED = "interrupted"
_SURPLUS = "surplus"
_LAYER_SUMMARY = "per_layer"  # a non-uniform plan in a few words (Measurement.layer_summary)
# Written last of a measurement's attributes, and read as "this trial holds a measurement": a
# worker reading a trial while another stores it (one attribute at a time) never sees half of one.
_MEASURED = "srcr"


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a study, as stored.

    ``reused``: its configuration had been computed before (by any trial of any study sharing
    the results table) and the stored measurement was copied. ``fail_reason``: why it failed, as
    ``ExceptionType: message`` (a dead worker leaves none). ``interrupted``: Ctrl-C stopped it,
    which says nothing about its configuration. ``surplus``: started past the study's target,
    it computed nothing.
    """

    number: int
    state: TrialState
    config: CompressionConfig | None = None
    measurement: Measurement | None = None
    constraints: dict[str, float] = field(default_factory=dict)  # Optuna's, <= 0 when met
    worker: str | None = None
    run: str | None = None  # the `sweep run` it belongs to (study.Run)
    reused: bool = False
    fail_reason: str | None = None
    interrupted: bool = False
    surplus: bool = False

    @property
    def config_key(self) -> str | None:
        return None if self.config is None else self.config.key()

    @property
    def feasible(self) -> bool:
        """Whether it meets the study's constraints (every bound, or there are none)."""
        return meets_constraints(self.constraints)

    @property
    def computed(self) -> bool:
        """Complete, and computed by this trial rather than copied from an earlier one."""
        return self.measured and not self.reused

    @property
    def measured(self) -> bool:
        """Complete, with a measurement (full, or stopped early by staged evaluation)."""
        return self.state == TrialState.COMPLETE and self.measurement is not None

    @property
    def fully_measured(self) -> bool:
        """Measured on every document: what fronts, tables and exports are made of."""
        return self.measured and self.measurement.full

    def to_user_attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if self.config is not None:
            attrs[_CONFIG] = self.config.to_dict()
            attrs[_CONFIG_KEY] = self.config.key()
        if self.worker is not None:
            attrs[_WORKER] = self.worker
        if self.run is not None:
            attrs[_RUN] = self.run
        if self.measurement is not None:
            attrs.update(self.measurement.to_dict())
            if self.measurement.layers:  # the dashboard shows attributes as they are
                attrs[_LAYER_SUMMARY] = self.measurement.layer_summary
        flags = {_REUSED: self.reused, _INTERRUPTED: self.interrupted, _SURPLUS: self.surplus}
        attrs.update({k: True for k, on in flags.items() if on})
        if self.fail_reason is not None:
            attrs[_FAIL_REASON] = self.fail_reason
        return attrs

    def store(self, trial: optuna.Trial) -> None:
        """Write ``to_user_attrs`` into a running trial, the measurement's marker last."""
        attrs = self.to_user_attrs()
        marker = attrs.pop(_MEASURED, None)
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if marker is not None:
            trial.set_user_attr(_MEASURED, marker)

    @classmethod
    def from_trial(cls, trial: FrozenTrial) -> TrialRecord:
        a = trial.user_attrs
        return cls(
            number=trial.number,
            state=trial.state,
            config=CompressionConfig(**a[_CONFIG]) if _CONFIG in a else None,
            measurement=Measurement.from_dict(a) if _MEASURED in a else None,
            constraints=dict(trial.constraints),
            worker=a.get(_WORKER),
            run=a.get(_RUN),
            reused=bool(a.get(_REUSED, False)),
            fail_reason=a.get(_FAIL_REASON),
            interrupted=bool(a.get(_INTERRUPTED, False)),
            surplus=bool(a.get(_SURPLUS, False)),
        )


def trial_records(study: optuna.Study, *states: TrialState) -> list[TrialRecord]:
    """The study's trials (of ``states``, or all), in number order."""
    trials = study.get_trials(deepcopy=False, states=states or None)
    return [TrialRecord.from_trial(t) for t in trials]


def measured_records(study: optuna.Study) -> list[TrialRecord]:
    """The complete trials that hold a measurement."""
    return [r for r in trial_records(study, TrialState.COMPLETE) if r.measured]
