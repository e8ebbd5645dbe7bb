"""Optuna's objective: it admits a trial into its run, picks a configuration, computes it once
across all workers, and records it (the loop that runs trials is ``sweep.run_loop``).

A run (``study.Run``) computes a number of *new* configurations. Each trial claims its
configuration in the shared results table (``sweep.results``) before computing it, so a
configuration is computed once; a trial that finds it computed copies the stored measurement
(it is recorded, and teaches the sampler, but does not count toward the budget). Optuna's
heartbeats mark a dead worker's trial failed and retry it, checked by every live worker every
few seconds (``failing_stale_trials``); a trial that raises is stored FAIL with its reason, and
the loop goes on; Ctrl-C or SIGTERM stores the running trial FAIL and ends the loop
(KeyboardInterrupt, or its subclass ``Terminated``, propagates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import optuna
from optuna.trial import TrialState

from sweep.compress import CompressionConfig
from sweep.deployment import DEPLOYABLE, judged
from sweep.errors import TrialError, disk_full
from sweep.evaluation.measurement import BaseReference, Measurement
from sweep.evaluation.stages import Front, StopRule
from sweep.events import Events
from sweep.identity import ResultContext
from sweep.interrupts import InterruptGuard
from sweep.metrics import BOUNDED
from sweep.record import TrialRecord, trial_records
from sweep.results import ResultsTable
from sweep.space import first_configs, suggest_config
from sweep.spec import StudySpec
from sweep.study import Run
from sweep.trial import TrialRunner


@dataclass
class WorkerContext:
    """What one worker holds for the study it works on: the spec, the loaded model (in its
    runner), the base reference, the shared results table and what the results' keys cover,
    and the run it takes part in."""

    spec: StudySpec
    runner: TrialRunner
    base: BaseReference
    results: ResultsTable
    result_context: ResultContext
    run: Run
    staged: bool = False  # trials evaluate in stages (the base reference holds samples)


def _reason(err: BaseException) -> str:
    """Why a trial failed, as stored: ``ExceptionType: message``."""
    return f"{type(err).__name__}: {err}"


def in_run(record: TrialRecord, run: Run) -> bool:
    """Whether a trial belongs to ``run``; one that has just started may not have recorded its
    run yet, so a running trial without one counts, to be safe."""
    return record.run == run.id or (record.state == TrialState.RUNNING and not record.run)


class Surplus(optuna.TrialPruned):
    """This trial would take its run past its budget; it is stored PRUNED, computing nothing."""


class Objective:
    """Optuna's objective: admit the trial, pick a configuration, compute it once, record it."""

    def __init__(
        self, context: WorkerContext, events: Events, guard: InterruptGuard | None = None
    ) -> None:
        self.context = context
        self.events = events
        self.guard = guard or InterruptGuard()
        self.repeats = 0  # trials in a row that reused a stored result
        self.failures = 0  # trials in a row that raised
        self.full_disk: BaseException | None = None  # why the last trial failed, if a full disk
        self.first = {c.key() for c in first_configs(context.spec.search)}

    def _admit(self, trial: optuna.Trial) -> None:
        """Trials are admitted in number order until the run's budget is reached: trials that
        computed, and those started before this one, which may yet compute."""
        run = self.context.run
        records = trial_records(trial.study, TrialState.COMPLETE, TrialState.RUNNING)
        ahead = [
            r
            for r in records
            if in_run(r, run)
            and (r.computed or (r.state == TrialState.RUNNING and r.number < trial.number))
        ]
        if len(ahead) >= run.budget:
            TrialRecord(trial.number, TrialState.PRUNED, surplus=True).store(trial)
            raise Surplus(f"{len(ahead)} trials computed or running, budget {run.budget}")

    def _values(self, m: Measurement) -> tuple[float, ...]:
        values = tuple(float(m.value(o)) for o in self.context.spec.objectives)
        if not all(math.isfinite(v) for v in values):
            raise TrialError(f"non-finite objectives {values}")
        return values

    def _judged(self, config: CompressionConfig, m: Measurement) -> Measurement:
        """``m`` with the study's deploy runtime's verdict (``sweep.deployment``)."""
        ctx = self.context
        return judged(m, config, ctx.runner.loaded.layout(), ctx.spec.deploy)

    def _finish(self, trial: optuna.Trial, record: TrialRecord) -> tuple[float, ...]:
        """Judge the measurement by the study's deploy runtime, store the record and its
        constraint values (a trial the runtime refuses is infeasible); return the objective
        values."""
        assert record.config is not None and record.measurement is not None
        m = self._judged(record.config, record.measurement)
        values = self._values(m)
        replace(record, measurement=m).store(trial)
        metrics = {name: m.value(name) for name in BOUNDED if m.value(name) is not None}
        for bound, value in self.context.spec.constraints.violations(metrics).items():
            trial.set_constraint(bound, value)
        if m.deployable is not None:
            trial.set_constraint(DEPLOYABLE, 0.0 if m.deployable else 1.0)
        return values

    def _stop_rule(self, study: optuna.Study, config: CompressionConfig) -> StopRule:
        """When a trial of ``config`` stops early (``sweep.evaluation.stages``): against the
        study's front as it stands now, judged by the study's deploy runtime; never for a
        configuration that ``search.first`` names."""
        front = Front.of(
            self.context.spec.objectives,
            (
                r.measurement
                for r in trial_records(study, TrialState.COMPLETE)
                if r.fully_measured and r.feasible
            ),
        )
        return StopRule(
            config,
            front,
            judge=lambda m: self._judged(config, m),
            never=config.key() in self.first,
        )

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        try:
            with self.guard.allowed():
                return self._run(trial)
        except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM, in whatever step the trial was
            TrialRecord(
                trial.number, TrialState.FAIL, fail_reason=_reason(err), interrupted=True
            ).store(trial)
            raise

    def _run(self, trial: optuna.Trial) -> tuple[float, ...]:
        ctx = self.context
        self._admit(trial)
        config = suggest_config(trial, ctx.spec.search)
        record = TrialRecord(
            trial.number, TrialState.RUNNING, config, worker=ctx.results.owner, run=ctx.run.id
        )
        record.store(trial)
        rkey = ctx.result_context.key(config)

        def waiting(owner: str) -> None:
            self.events.note(
                f"  trial {trial.number}: {config.key()} is being computed by "
                f"{owner}: waiting for its result"
            )

        stop = self._stop_rule(trial.study, config)
        claim = ctx.results.claim(
            rkey,
            config.key(),
            ctx.result_context.fields,
            trial.study.study_name,
            trial.number,
            on_wait=waiting,
        )
        try:  # from here on a claim this trial holds is released whatever ends it
            while not claim.owned:
                measurement = Measurement.from_dict(claim.result)
                if measurement.full or (ctx.staged and stop(measurement)):
                    reused = replace(record, measurement=measurement, reused=True)
                    values = self._finish(trial, reused)
                    self.repeats += 1
                    self.events.trial_reused(trial.number, config)
                    return values
                # stopped early against another study's front, and this study evaluates in
                # full or its own front does not dominate it: compute it again
                claim = ctx.results.reopen(claim, trial.study.study_name, trial.number)
            self.repeats = 0
            with ctx.results.beating(rkey):
                result = ctx.runner.run(
                    config,
                    ctx.base,
                    on_phase=lambda phase: self.events.trial_phase(trial.number, config, phase),
                    stop=stop if ctx.staged else None,
                )
            self._values(self._judged(config, result.measurement))
        except BaseException as err:
            if not claim.owned:  # a stored result this trial was reading: nothing of its own
                raise
            reason = _reason(err)
            interrupted = isinstance(err, KeyboardInterrupt)  # not the configuration's fault
            replace(record, fail_reason=reason, interrupted=interrupted).store(trial)
            ctx.results.fail(rkey, reason)
            self.failures += 1
            self.full_disk = err if disk_full(err) else None
            self.events.trial_failed(trial.number, config, reason)
            raise
        self.failures = 0
        ctx.results.finish(rkey, result.measurement.to_dict())
        values = self._finish(trial, replace(record, measurement=result.measurement))
        self.events.trial_measured(trial.number, config, self._judged(config, result.measurement))
        return values
