"""`sweep status`: a study's progress, its failures with their reasons, and its best trials."""

from __future__ import annotations

from collections import Counter

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from sweep.report import front_table, reuse_summary, trials_frame
from sweep.study import TARGET_ATTR


def print_status(study: optuna.Study, console: Console) -> None:
    """Print the study's trial counts, running and failed trials, and its Pareto front."""
    name = study.study_name
    trials = study.get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    target = study.user_attrs.get(TARGET_ATTR)
    summary = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items())) or "no trials"
    console.print(f"study [bold]{name}[/]: {summary}; target {target} complete")

    running = [t for t in trials if t.state == TrialState.RUNNING]
    _print_trials(console, "running", running, "started", _started)
    failed = [t for t in trials if t.state == TrialState.FAIL]
    _print_trials(console, "failed", failed, "reason", _reason)

    frame = trials_frame(study)
    if frame.empty:
        return
    console.print(reuse_summary(frame))
    outside = int((~frame["feasible"]).sum())
    if outside:
        console.print(f"outside the study's constraints: {outside} complete (left off the front)")
    console.print(front_table(frame))


def _started(t: optuna.trial.FrozenTrial) -> str:
    return t.datetime_start.strftime("%H:%M:%S") if t.datetime_start else "?"


def _reason(t: optuna.trial.FrozenTrial) -> str:
    return t.user_attrs.get("fail_reason", "worker stopped (no heartbeat)")


def _print_trials(console: Console, title: str, trials: list, last: str, cell) -> None:
    if not trials:
        return
    table = Table(title=title, title_justify="left")
    for col in ("trial", "configuration", last):
        table.add_column(col)
    for t in trials:
        table.add_row(str(t.number), t.user_attrs.get("config_key", "?"), cell(t))
    console.print(table)
