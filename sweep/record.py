"""What a study stores, in one place: the base reference, a measurement, and a trial's record.

- ``BaseReference``: the uncompressed model's scores, the denominator of Sr; one per study.
- ``Measurement``: what computing one configuration gives (``METRICS``, task scores, timings).
  It is kept in the results table (``sweep.results``), so that a configuration is computed once,
  and copied into every trial that asked for that configuration.
- ``TrialRecord``: a stored Optuna trial as the rest of the tool reads it: its configuration,
  its measurement and what happened to it. ``to_user_attrs`` and ``from_trial`` are the only code
  that knows the names of the trials' user attributes.

Three sparsities, three names: ``config.sparsity`` is what the configuration asks for (0 for an
N:M pattern), ``config.target_sparsity`` what its pattern means (1 - N/M for N:M), and
``Measurement.measured_sparsity`` the fraction the pruning step removed, which TCr and SrCr use.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.compress.config import CompressionConfig
from sweep.spec import meets_constraints
from sweep.stages import FULL
from sweep.subsample import TaskSample


@dataclass(frozen=True)
class BaseReference:
    """The uncompressed model's scores and each task's random-guess score: Sr's denominator."""

    scores: dict[str, float]
    random_scores: dict[str, float]
    perplexity: float | None = None
    # staged evaluation: each task's sample of documents with the base model's scores on them
    # (``sweep.subsample.TaskSample.to_dict``); None when the study evaluates in full only
    samples: dict[str, dict[str, Any]] | None = None

    def task_samples(self) -> dict[str, TaskSample] | None:
        if self.samples is None:
            return None
        return {task: TaskSample.from_dict(data) for task, data in self.samples.items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaseReference:
        return cls(**data)


@dataclass(frozen=True)
class Measurement:
    """Everything computing one configuration measured (see ``sweep.metrics``)."""

    measured_sparsity: float  # fraction removed by the pruning step, over compressible weights
    zero_fraction: float  # fraction of exact zeros in the final compressible weights
    tcr: float
    real_ratio: float
    sr: float
    srcr: float
    perplexity: float | None
    task_scores: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase
    # staged evaluation (``sweep.staging``): FULL; SAMPLE when the trial stopped after its
    # sample (then task scores and Sr are estimates, Sr in [sr_low, sr_high], no perplexity);
    # TASKS when it stopped before the perplexity task (Sr exact, no perplexity)
    stage: str = FULL
    kl: float | None = None  # KL proxy: base vs compressed next-token distributions, nats
    sr_low: float | None = None
    sr_high: float | None = None
    capacity: float | None = None  # kappa, SrCr's denominator (absent from older results)
    # a non-uniform config's plan: module name -> [pruned fraction, bits]; None when uniform
    layers: dict[str, list[float]] | None = None
    # what the study's deploy runtime makes of it (``sweep.deployment``); None without one.
    # Judged for each trial by its study's target, never taken from the results table.
    deployable: bool | None = None
    deploy_reason: str | None = None
    deploy_ratio: float | None = None

    @property
    def layer_summary(self) -> str:
        """The plan in a few words: share of layers per bit-width, range of sparsity."""
        return summarise_layers(self.layers) if self.layers else ""

    @property
    def full(self) -> bool:
        """Measured on every document: a front point, a table row, an export."""
        return self.stage == FULL

    def value(self, metric: str) -> float | None:
        """The value of one of ``sweep.metrics.METRICS`` by name."""
        return getattr(self, metric)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Measurement:
        """From ``to_dict``'s output (other keys are ignored); results stored before the measured
        sparsity had its own name hold it as ``sparsity``."""
        data = dict(data)
        if "measured_sparsity" not in data and "sparsity" in data:
            data["measured_sparsity"] = data["sparsity"]
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def summarise_layers(layers: dict[str, list[float]]) -> str:
    """``bits 2:31% 3:44% 4:25%; sparsity 0.41-0.58`` for a plan (name -> [sparsity, bits]).
    Layers count once each (not weighted by size): what varies, and how widely."""
    bits = Counter(int(b) for _, b in layers.values())
    shares = " ".join(f"{b}:{n / len(layers):.0%}" for b, n in sorted(bits.items()))
    sparsities = [s for s, _ in layers.values()]
    lo, hi = min(sparsities), max(sparsities)
    spread = f"{lo:.2f}" if hi - lo < 0.005 else f"{lo:.2f}-{hi:.2f}"
    return f"bits {shares}; sparsity {spread}"


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
