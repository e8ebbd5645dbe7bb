"""Search plans: how the workers of a study choose their trials.

A plan owns the Optuna sampler of one worker and may keep a plan of its own on top of it (the
grid queues every configuration of the space). Before each trial the worker loop
(``sweep.run_loop.run_trials``) asks its plan what to do; the run's budget (the number of new
configurations it computes) is the loop's business, not the plan's.

The contract of a plan:

- ``sampler``: the Optuna sampler of this worker, seeded from the spec's seed, the worker's
  number and the number of trials the study held when the worker started, so that workers
  and later runs do not propose what earlier ones did.
- ``prepare(study)``: run once by the process that launches a run, before any worker starts;
  returns a line to show the user, or None.
- ``next(study)``: before each trial: ``Step.RUN`` (start one now), ``Step.WAIT`` (what is left
  runs on other workers: look again soon) or ``Step.STOP`` (nothing left to do).
- ``exhausted(study)``: True once the plan has nothing left to propose.

Every plan first queues the configurations the spec lists in ``search.first`` (in their order,
before anything else), and queues again those of trials that Ctrl-C interrupted (a dead
worker's trials Optuna queues again by itself), unless another trial has done, runs or waits
for them.

Plans are registered by the sampler names a spec may use (``spec.SAMPLERS``).
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweep.record import TrialRecord, trial_records
from sweep.space import all_configs, config_params, first_configs, suggest_config
from sweep.spec import SAMPLERS, StudySpec

SEED_STRIDE = 7919  # seeds of later runs lie apart from those of the workers of earlier ones


class Step(enum.Enum):
    RUN = "run"
    WAIT = "wait"
    STOP = "stop"


class SearchPlan:
    """A plan that leaves every choice to its sampler; subclasses say which sampler."""

    def __init__(self, spec: StudySpec, worker: int = 0, trials_before: int = 0) -> None:
        self.spec = spec
        self.worker = worker
        seed = spec.sampler.seed
        self.seed = None if seed is None else seed + worker + SEED_STRIDE * trials_before
        self.sampler = self.make_sampler()

    def make_sampler(self) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def prepare(self, study: optuna.Study) -> str | None:
        first = self.queue_first(study)
        self.requeue_interrupted(study)
        return f"queued first: {first} configuration(s) of search.first" if first else None

    def queue_first(self, study: optuna.Study) -> int:
        """Queue the configurations of ``search.first`` that are neither done, running nor
        queued, in their order; return how many."""
        done, pending = self._progress(study)
        queued = 0
        for config in first_configs(self.spec.search):
            if config.key() not in done | pending:
                study.enqueue_trial(config_params(config, self.spec.search), skip_if_exists=False)
                pending.add(config.key())
                queued += 1
        return queued

    def next(self, study: optuna.Study) -> Step:
        self.requeue_interrupted(study)
        return Step.STOP if self.exhausted(study) else Step.RUN

    def exhausted(self, study: optuna.Study) -> bool:
        """Every configuration of the space is done (complete, or failed by its own fault)."""
        done, _ = self._progress(study)
        return self._covers(done)

    def _covers(self, done: set[str]) -> bool:
        """Whether ``done`` holds every configuration key of the space; the space is listed
        only once ``done`` is as large as it (a space may hold 100,000)."""
        space = self.spec.search
        return len(done) >= space.size() and {c.key() for c in all_configs(space)} <= done

    def requeue_interrupted(self, study: optuna.Study) -> int:
        """Queue again the configurations of interrupted trials that no other trial has done,
        runs or waits for; return how many."""
        done, pending = self._progress(study)
        again = {}
        for r in trial_records(study, TrialState.FAIL):
            key = r.config_key
            if r.interrupted and key is not None and key not in done | pending:
                again[key] = r.config
        for config in again.values():
            study.enqueue_trial(config_params(config, self.spec.search), skip_if_exists=False)
        return len(again)

    def _queued_key(self, trial: FrozenTrial) -> str | None:
        """The configuration of a queued trial that has not started yet."""
        fixed = trial.system_attrs.get("fixed_params")
        if fixed is None:
            return None
        return suggest_config(optuna.trial.FixedTrial(fixed), self.spec.search).key()

    def _progress(self, study: optuna.Study) -> tuple[set[str], set[str]]:
        """The configurations done (complete, or failed by their own fault), and those running
        or queued, by key."""
        done, pending = set(), set()
        for t in study.get_trials(deepcopy=False):
            record = TrialRecord.from_trial(t)
            key = record.config_key or self._queued_key(t)
            if key is None:
                continue
            if _done(record):
                done.add(key)
            elif t.state in (TrialState.RUNNING, TrialState.WAITING):
                pending.add(key)
        return done, pending


# TPE, NSGA-II and GP read each trial's constraints (Trial.set_constraint) on their own.


class TPEPlan(SearchPlan):
    def make_sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=self.seed, multivariate=True, group=True)


class NSGA2Plan(SearchPlan):
    def make_sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(seed=self.seed)


class GPPlan(SearchPlan):
    def make_sampler(self) -> optuna.samplers.BaseSampler:
        # The space is conditional (no order without both steps...): GP models the parameters
        # every trial has and samples the others independently, by design; its per-trial
        # warning about that is noise.
        return optuna.samplers.GPSampler(seed=self.seed, warn_independent_sampling=False)


class RandomPlan(SearchPlan):
    def make_sampler(self) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=self.seed)


class GridPlan(RandomPlan):
    """Every distinct configuration of the space once, as a queue of trials.

    Each configuration is queued once (Optuna's ``enqueue_trial``), in an order shuffled by the
    spec's seed; workers take queued trials first, so they share the plan through the storage.
    A configuration is done when a trial completed it or failed by its own fault (not Ctrl-C,
    not a dead worker); the rest is queued again by ``prepare`` and ``next``. A cartesian grid
    over the trial parameters would also visit points that differ only in parameters without
    effect; the random sampler only fills in if the queue runs dry.
    """

    def prepare(self, study: optuna.Study) -> str:
        first = self.queue_first(study)  # before the rest, which is shuffled
        self.queue_missing(study)
        size = len(all_configs(self.spec.search))
        ahead = f"; {first} of search.first queued ahead" if first else ""
        return f"grid: {size} distinct configurations, each visited once{ahead}"

    def next(self, study: optuna.Study) -> Step:
        self.queue_missing(study)
        if self.exhausted(study):
            return Step.STOP
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return Step.WAIT  # the rest of the grid is running on other workers
        return Step.RUN

    def exhausted(self, study: optuna.Study) -> bool:
        if study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return False
        done, _ = self._progress(study)
        return self._covers(done)

    def queue_missing(self, study: optuna.Study) -> int:
        """Queue every configuration neither done, running nor queued; return how many."""
        done, pending = self._progress(study)
        taken = done | pending
        space = self.spec.search
        missing = sorted((c for c in all_configs(space) if c.key() not in taken), key=str)
        random.Random(self.spec.sampler.seed).shuffle(missing)
        for config in missing:
            study.enqueue_trial(config_params(config, space), skip_if_exists=False)
        return len(missing)


def _done(record: TrialRecord) -> bool:
    """Complete, or failed by its own configuration (not a dead worker, not Ctrl-C)."""
    if record.state == TrialState.COMPLETE:
        return True
    own_failure = record.fail_reason is not None and not record.interrupted
    return record.state == TrialState.FAIL and own_failure


PLANS: dict[str, Callable[[StudySpec, int, int], SearchPlan]] = {
    "tpe": TPEPlan,
    "nsga2": NSGA2Plan,
    "gp": GPPlan,
    "random": RandomPlan,
    "grid": GridPlan,
}
assert set(PLANS) == set(SAMPLERS), "every sampler a spec may name has a plan"


def make_plan(spec: StudySpec, worker: int = 0, trials_before: int = 0) -> SearchPlan:
    """The plan of ``spec``'s sampler for worker number ``worker``, joining a study that holds
    ``trials_before`` trials."""
    return PLANS[spec.sampler.name](spec, worker, trials_before)
