"""`sweep status`: a study's progress, its failures with their reasons, and its best trials."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from sweep.objective import RunProgress, run_summary
from sweep.record import TrialRecord, trial_records
from sweep.report import front_table, reuse_summary, trials_frame
from sweep.study import current_run


def print_status(study: optuna.Study, console: Console) -> None:
    """Print the study's trial counts, running and failed trials, and its Pareto front."""
    records = trial_records(study)
    states = Counter(r.state.name for r in records)
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "no trials"
    console.print(f"study [bold]{study.study_name}[/]: {summary}")
    run = current_run(study)
    if run is not None:
        console.print(run_summary(RunProgress.of(study, run), run))
    started = {t.number: t.datetime_start for t in study.get_trials(deepcopy=False)}
    running = [r for r in records if r.state == TrialState.RUNNING]
    _print_trials(console, "running", running, "started", lambda r: _clock(started[r.number]))
    failed = [r for r in records if r.state == TrialState.FAIL]
    _print_trials(
        console,
        "failed",
        failed,
        "reason",
        lambda r: r.fail_reason or "worker stopped (no heartbeat)",
    )

    frame = trials_frame(study)
    if frame.empty:
        return
    console.print(reuse_summary(frame))
    outside = int((~frame["feasible"]).sum())
    if outside:
        console.print(f"outside the study's constraints: {outside} complete (left off the front)")
    console.print(front_table(frame))


def _clock(when: datetime | None) -> str:
    return when.strftime("%H:%M:%S") if when else "?"


def _print_trials(
    console: Console,
    title: str,
    records: list[TrialRecord],
    last: str,
    cell: Callable[[TrialRecord], str],
) -> None:
    if not records:
        return
    table = Table(title=title, title_justify="left")
    for col in ("trial", "configuration", last):
        table.add_column(col)
    for r in records:
        table.add_row(str(r.number), r.config_key or "?", cell(r))
    console.print(table)
