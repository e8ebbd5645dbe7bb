"""A worker's loop: it runs trials, as its plan says, until its run has computed its budget of
new configurations; where a run stands (``RunProgress``), and the line that sums it up.

Trials that raise are stored FAIL by the objective and the loop goes on, up to
``FAILURE_LIMIT`` in a row; a sampler that keeps proposing computed configurations stops it
after ``REPEAT_LIMIT``. Every live worker fails the trials of dead ones every few seconds
(``failing_stale_trials``). Ctrl-C or SIGTERM ends the loop (KeyboardInterrupt, or its subclass
``Terminated``, propagates) once the running trial is stored FAIL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from sweep.errors import UserError
from sweep.events import Events
from sweep.interrupts import InterruptGuard
from sweep.objective import Objective, WorkerContext, in_run
from sweep.plan import SearchPlan, Step
from sweep.record import trial_records
from sweep.storage import failing_stale_trials
from sweep.study import Run

REPEAT_LIMIT = 30  # proposals in a row already computed: the sampler has little left to offer
FAILURE_LIMIT = 5  # trials in a row that raise: something is wrong beyond one configuration


class TrialsFailing(UserError):
    """Every recent trial of a worker failed; the reasons are stored on the trials."""


@dataclass(frozen=True)
class RunProgress:
    """Where a run stands: new configurations it computed, trials of it still running, and
    trials that reused a stored result."""

    computed: int
    running: int
    reused: int

    @classmethod
    def of(cls, study: optuna.Study, run: Run) -> RunProgress:
        records = trial_records(study, TrialState.COMPLETE, TrialState.RUNNING)
        mine = [r for r in records if in_run(r, run)]
        return cls(
            computed=sum(r.computed for r in mine),
            running=sum(r.state == TrialState.RUNNING for r in mine),
            reused=sum(r.measured and r.reused for r in mine),
        )


def run_trials(
    study: optuna.Study,
    context: WorkerContext,
    plan: SearchPlan,
    events: Events,
    poll_s: float = 2.0,
) -> RunProgress:
    """Run trials, as ``plan`` says, until the run has computed its budget of new
    configurations or the plan has nothing left; returns where the run stands."""
    with InterruptGuard() as guard, failing_stale_trials(study):
        return _loop(study, context, plan, events, poll_s, guard)


def _loop(
    study: optuna.Study,
    context: WorkerContext,
    plan: SearchPlan,
    events: Events,
    poll_s: float,
    guard: InterruptGuard,
) -> RunProgress:
    objective = Objective(context, events, guard)
    budget = context.run.budget
    progress = RunProgress.of(study, context.run)
    events.trials_started(progress.computed, budget)
    start = time.perf_counter()
    waited_for = -1
    try:
        while True:
            progress = RunProgress.of(study, context.run)
            events.trials_progress(progress.computed, budget)
            if progress.computed >= budget:
                break
            # trials running elsewhere may yet complete, or die and be retried
            busy = progress.computed + progress.running >= budget
            step = Step.WAIT if busy else plan.next(study)
            if step is Step.STOP:
                break
            if step is Step.WAIT:
                if progress.running != waited_for:
                    events.note(
                        f"waiting for {progress.running} trial(s) running on other "
                        "workers (a dead worker's trial is retried after "
                        "its heartbeat stops)"
                    )
                    waited_for = progress.running
                time.sleep(poll_s)
                continue
            waited_for = -1
            with guard.deferred():
                study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
            if objective.repeats >= REPEAT_LIMIT:
                events.note(
                    f"the sampler proposed {objective.repeats} configurations in a row "
                    "that the study had computed: the space looks exhausted for it, so "
                    "this worker stops"
                )
                break
            if objective.full_disk is not None:
                # every later trial would fail the same way: stop, saying what to free
                raise objective.full_disk
            if objective.failures >= FAILURE_LIMIT:
                raise TrialsFailing(
                    f"{objective.failures} trials in a row failed; the last: "
                    f"{_last_failure(study)} (`sweep status` lists every reason)"
                )
    finally:
        final = RunProgress.of(study, context.run)
        events.trials_finished(final.computed, time.perf_counter() - start)
    return final


def run_summary(progress: RunProgress, run: Run) -> str:
    """One line on a run: what it computed, and what it found computed before."""
    reused = progress.reused
    running = f", {progress.running} running" if progress.running else ""
    return (
        f"run {run.id}: {progress.computed} of {run.budget} new configurations computed"
        f"{running}; {reused} trial{'' if reused == 1 else 's'} reused a stored result"
    )


def _last_failure(study: optuna.Study) -> str:
    failed = trial_records(study, TrialState.FAIL)
    return failed[-1].fail_reason or "no reason stored" if failed else "unknown"
